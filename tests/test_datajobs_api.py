"""Jobs and predictions on uploaded datasets through the API and a real (embedded) Ray: a job on
an NPZ trains on its worker, its dataset cannot be deleted while it runs (409), and predict on a
dataset answers what predict on the same inputs answers, with the accuracy against its targets."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from app.examples import DIGITS_MLP, digits_job
from tests import dataset_files as make
from tests.dataset_files import upload
from tests.test_datajobs import digits_arrays
from tests.test_jobs import finished, submit, wait


def uploaded(api: TestClient, arrays: dict[str, np.ndarray]) -> str:
    response = upload(api, make.npz(arrays), "digits.npz")
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def test_a_job_trains_on_an_upload_which_stays_while_it_runs_and_predicts_on_another(api: TestClient) -> None:
    arrays = digits_arrays()
    dataset_id = uploaded(api, arrays)
    body = digits_job(
        DIGITS_MLP, dataset={"id": dataset_id, "inputs": "x", "targets": "y"}, epochs=3, device="cpu"
    )
    job_id = submit(api, body)
    refused = api.delete(f"/v1/datasets/{dataset_id}")  # the job is queued: its actor is still starting
    assert refused.status_code == 409 and job_id in refused.json()["detail"][0]["ctx"]["jobs"], refused.text
    done = wait(api, job_id, finished)
    assert done["status"] == "succeeded" and done["metrics"]["val_accuracy"] > 0.8, done

    # Predict on a dataset of other samples (without targets, then with them).
    test = {"x": arrays["x"][:100], "y": arrays["y"][:100]}
    test_id = uploaded(api, test)
    predict = f"/v1/jobs/{job_id}/predict"
    inline = api.post(predict, json={"inputs": test["x"].tolist()}).json()
    answer = api.post(predict, json={"dataset": test_id}).json()
    assert answer["predictions"] == inline["predictions"] and answer["samples"] == 100
    np.testing.assert_allclose(answer["outputs"], inline["outputs"], rtol=1e-6)
    accuracy = np.mean(np.array(inline["predictions"]) == test["y"])
    assert answer["accuracy"] == accuracy and answer["loss"] > 0
    no_targets = api.post(predict, json={"dataset": {"id": test_id, "inputs": "x", "targets": None}}).json()
    assert no_targets["predictions"] == inline["predictions"]

    assert api.delete(f"/v1/datasets/{dataset_id}").status_code == 204  # the job has finished
    assert api.get(f"/v1/jobs/{job_id}").json()["request"]["dataset"]["planned"]["samples"] == 1797


def test_an_unknown_dataset_is_a_404_at_its_id(api: TestClient) -> None:
    body = digits_job(DIGITS_MLP, dataset={"id": "0" * 64, "inputs": "x", "targets": "y"}, device="cpu")
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 404 and response.json()["detail"][0]["loc"] == ["body", "dataset", "id"]


def test_a_mismatch_is_a_422_at_the_field_naming_the_array(api: TestClient) -> None:
    dataset_id = uploaded(api, digits_arrays())
    body = digits_job(
        DIGITS_MLP, dataset={"id": dataset_id, "inputs": "pixels", "targets": "y"}, device="cpu"
    )
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "dataset", "inputs"] and "'pixels'" in error["msg"]
