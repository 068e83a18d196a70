"""Every limit and address of the service, read once from the environment (prefix ``MB_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MB_", env_file=".env", extra="ignore")

    cors_origins: list[str] = Field(
        default=[],
        description="origins allowed to call the API from a browser (JSON list); none: same-origin only",
    )
    # The lock for an exposed API (app/core/security.py): off by default, on in docker-compose.yml.
    api_keys: list[SecretStr] = Field(
        default=[], description="keys accepted in the X-API-Key header on /v1 (JSON list); none: open"
    )
    admin_api_keys: list[SecretStr] = Field(
        default=[], description="keys that may also read, follow and cancel every client's jobs (JSON list)"
    )
    rate_limit_per_s: float = Field(0, ge=0, description="requests per second per client on /v1; 0: off")
    rate_limit_burst: int = Field(30, gt=0, description="requests a client may send at once on /v1")
    max_body_bytes: int = Field(1 << 20, gt=0, description="largest request body; 413 beyond it")
    max_json_depth: int = Field(96, gt=0, description="deepest JSON nesting of a request body")
    max_layers: int = Field(4096, gt=0, description="layers in one model, containers included")
    max_nesting: int = Field(16, gt=0, description="containers nested inside containers")
    max_input_rank: int = Field(6, gt=0, description="dimensions of an input shape")
    max_input_dim: int = Field(1 << 20, gt=0, description="largest size of one input dimension")
    max_input_numel: int = Field(1 << 36, gt=0, description="largest element count of an input")
    max_trace_seconds: float = Field(10, gt=0, description="time to trace one model; 422 beyond it")
    summary_cache_size: int = Field(256, ge=0, description="summaries kept for repeated requests")
    summary_cache_bytes: int = Field(
        64 << 20, ge=0, description="bytes of the kept summaries (their JSON), all together"
    )
    trace_cache_bytes: int = Field(
        64 << 20, ge=0, description="bytes of the layers' traces kept for re-tracing edited models"
    )
    max_concurrent_traces: int = Field(
        2, gt=0, description="summaries, /fit and exports traced at once; more wait their turn"
    )
    trace_processes: int | None = Field(
        None,
        ge=0,
        description="warm worker processes tracing summaries, /fit and exports (unset: one per core); "
        "0: in the API process",
    )
    trace_memory_bytes: int | None = Field(
        8 << 30, gt=0, description="resident memory of one trace worker; past it the worker is killed (422)"
    )
    max_export_seconds: float = Field(
        60, gt=0, description="CPU time of one export in a trace worker; past it the worker is killed (422)"
    )
    data_dir: Path = Field(
        Path("data"), description="jobs' files, and their SQLite store unless database_url names another"
    )
    # The job store (app/jobs/store.py).
    database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL of the job store (postgresql+psycopg://...); else SQLite"
    )
    db_retry_seconds: float = Field(
        5, ge=0, description="how long a store call retries a busy or unreachable database; then 503"
    )
    worker_db_retry_seconds: float = Field(
        60, ge=0, description="how long a job's worker retries the store; then the job fails"
    )
    job_retention_days: float = Field(
        30, ge=0, description="finished jobs older than this are deleted with their files; 0: kept"
    )
    # Training jobs (app/jobs): limits checked before a job is queued.
    max_epochs: int = Field(200, gt=0, description="epochs of one training job")
    max_steps: int = Field(200_000, gt=0, description="optimizer steps of one job, all epochs together")
    max_batch_size: int = Field(4096, gt=0, description="largest training batch")
    max_job_seconds: float = Field(600, gt=0, description="wall time of one job; it fails past it")
    max_queued_jobs: int = Field(16, gt=0, description="jobs queued or running at once; 429 beyond")
    max_job_memory_bytes: int = Field(
        4 << 30, gt=0, description="estimated training memory of one job (its training step's peak and data)"
    )
    job_memory_factor: float = Field(
        1.25, ge=1, description="a job's memory allowance is its estimate times this, plus the slack"
    )
    job_memory_slack_bytes: int = Field(
        512 << 20, ge=0, description="added to a job's allowance (allocator and kernels' overhead)"
    )
    max_dataset_samples: int = Field(
        100_000, gt=0, description="samples of a synthetic, inline or uploaded dataset"
    )
    max_dataset_numel: int = Field(1 << 26, gt=0, description="numbers in a dataset's inputs, all samples")
    # Uploaded datasets (app/datasets): stored under MB_DATA_DIR/datasets/, owned per API key.
    max_dataset_bytes: int = Field(
        512 << 20, gt=0, description="largest uploaded dataset file, and its content once inflated; 413"
    )
    max_datasets_bytes: int = Field(
        8 << 30, gt=0, description="uploaded datasets' bytes per API key, all together; 413 beyond"
    )
    max_artifact_bytes: int = Field(
        1 << 30, gt=0, description="largest weights file of a job (parameter and buffer bytes); 422 beyond"
    )
    train_wait_seconds: float = Field(120, gt=0, description="how long POST /v1/train waits for its job")
    progress_every_steps: int = Field(50, gt=0, description="a progress event every N steps, and each epoch")
    worker_threads: int = Field(1, gt=0, description="torch threads of a CPU training worker")
    # Trained models (app/jobs/weights.py, app/api/routes/predict.py, app/api/routes/export.py).
    max_predict_samples: int = Field(1024, gt=0, description="samples in one predict request")
    max_predict_numel: int = Field(1 << 20, gt=0, description="numbers in one predict request's inputs")
    predict_cache_size: int = Field(4, ge=1, description="trained models kept loaded for predict")
    predict_threads: int = Field(2, gt=0, description="predict requests run at once; more wait")
    max_concurrent_exports: int = Field(1, gt=0, description="ONNX exports run at once; more wait")
    ray_address: str | None = Field(
        None, description="Ray cluster to join (else env RAY_ADDRESS; else an embedded local Ray)"
    )
    ray_num_cpus: int | None = Field(None, gt=0, description="CPUs of the embedded Ray (default: all)")
    ray_eager_start: bool = Field(True, description="start Ray with the API rather than on the first job")
    embedded_ray_idle_seconds: float = Field(
        300, gt=0, description="the embedded Ray stops itself after this long with no API and no job"
    )
    warm_workers: int = Field(
        2, ge=0, description="job actors each API process keeps started ahead, so a job starts at once"
    )
    warm_worker_memory_bytes: int = Field(
        1 << 30,
        gt=0,
        description="memory a warm job actor reserves; a job with a larger allowance starts its own",
    )
    max_restarts: int = Field(
        2, ge=0, description="times Ray restarts a job's worker that died; it resumes from its checkpoint"
    )
    max_queue_seconds: float = Field(
        900, gt=0, description="how long a job may wait for a worker (queued, or its worker restarting)"
    )


settings = Settings()
