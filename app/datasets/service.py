"""The way in to datasets for the routes: an upload described and stored, a key's datasets read,
listed and deleted; files and records kept in step (app/datasets/files.py, store.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from app.core.config import settings
from app.core.security import Caller
from app.datasets.description import Limits
from app.datasets.errors import DatasetError, too_large
from app.datasets.files import DatasetFiles
from app.datasets.formats import describe
from app.datasets.images import Size
from app.datasets.store import Dataset, DatasetStore
from app.datasets.upload import Upload
from app.jobs.store import JobStore, StoreUnavailable

log = logging.getLogger(__name__)
ID = ("path", "dataset_id")


def owner_of(caller: Caller) -> str:
    """The records' owner for ``caller``: its key's sha256, ``""`` on a server without keys."""
    return caller.owner or ""


class Datasets:
    def __init__(
        self,
        store: DatasetStore,
        files: DatasetFiles,
        limits: Limits,
        quota: int,
        jobs: JobStore | None = None,
    ) -> None:
        self.store, self.files, self.limits, self.quota = store, files, limits, quota
        self.jobs = jobs  # whose queued and running jobs keep a dataset from deletion

    @classmethod
    def from_settings(cls, jobs: JobStore, data_dir: Path | None = None) -> Datasets:
        limits = Limits(max_bytes=settings.max_dataset_bytes, max_samples=settings.max_dataset_samples)
        files = DatasetFiles((data_dir or settings.data_dir).resolve() / "datasets")
        return cls(DatasetStore(jobs), files, limits, settings.max_datasets_bytes, jobs)

    def add(self, upload: Upload, caller: Caller, resize: Size | None) -> tuple[Dataset, bool]:
        """Describe and store ``upload`` for ``caller``; the dataset, and whether it is new (the
        same bytes again give the stored one)."""
        owner, asked = owner_of(caller), list(resize) if resize else None
        existing = self.store.get(upload.sha256, owner)
        if existing is not None:
            return _same_resize(existing, asked), False
        if self.store.bytes_of(owner) + upload.size > self.quota:  # before describing; add checks again
            raise _over_quota(self.quota)
        description = self.store.described(upload.sha256, asked) or describe(upload.path, self.limits, resize)
        dataset = Dataset(
            id=upload.sha256,
            owner=owner,
            name=upload.filename or upload.sha256[:12],
            size_bytes=upload.size,
            resize=asked,
            description=description,
            created_at=time.time(),
        )
        with self.files.lock():
            self.files.commit(upload.path, upload.sha256)
            try:
                added = self.store.add(dataset, self.quota, _over_quota(self.quota))
            except BaseException:
                self._remove_unreferenced(upload.sha256)
                raise
        if not added:  # another request of this key stored the same bytes meanwhile
            return _same_resize(self.get(upload.sha256, caller), asked), False
        return dataset, True

    def get(self, dataset_id: str, caller: Caller) -> Dataset:
        """The caller's dataset (an admin's: anyone's); another key's is a 404, as if missing."""
        dataset = self.store.get(dataset_id, owner_of(caller), caller.admin)
        if dataset is None:
            raise _not_found(dataset_id)
        return dataset

    def list(self, caller: Caller, offset: int, limit: int) -> tuple[list[Dataset], int]:
        return self.store.list(offset, limit, None if caller.admin else owner_of(caller))

    def delete(self, dataset_id: str, caller: Caller) -> None:
        """Remove the caller's record (an admin's: every key's), and the file once unreferenced."""
        with self.files.lock():
            self._refuse_in_use(dataset_id, caller)
            if not self.store.delete(dataset_id, owner_of(caller), caller.admin):
                raise _not_found(dataset_id)
            self._remove_unreferenced(dataset_id)

    def _refuse_in_use(self, dataset_id: str, caller: Caller) -> None:
        """A 409 while a queued or running job of the caller's key (an admin's: anyone's) uses it."""
        if self.jobs is None or self.store.get(dataset_id, owner_of(caller), caller.admin) is None:
            return  # nothing to refuse: the delete answers 404
        using = self.jobs.active_using_dataset(dataset_id, None if caller.admin else owner_of(caller))
        if using:
            msg = f"dataset {dataset_id} is in use by {len(using)} queued or running job(s), {using[0]} first"
            raise DatasetError(msg, kind="dataset_in_use", status=409, loc=ID, ctx={"jobs": using})

    def _remove_unreferenced(self, dataset_id: str) -> None:
        try:
            if not self.store.referenced(dataset_id):
                self.files.remove(dataset_id)
        except StoreUnavailable:  # the file stays, for the next upload of these bytes
            log.warning("could not check whether dataset %s is still referenced; its file stays", dataset_id)


def _same_resize(dataset: Dataset, resize: list[int] | None) -> Dataset:
    if dataset.resize != resize:
        stored = "x".join(map(str, dataset.resize)) if dataset.resize else "none"
        msg = f"dataset {dataset.id} is already stored with resize {stored}: delete it to store it anew"
        raise DatasetError(
            msg, kind="conflict", status=409, loc=("query", "resize"), ctx={"resize": dataset.resize}
        )
    return dataset


def _over_quota(quota: int) -> DatasetError:
    return too_large("this key's datasets, with this one,", "MB_MAX_DATASETS_BYTES", quota)


def _not_found(dataset_id: str) -> DatasetError:
    return DatasetError(f"no dataset {dataset_id!r}", kind="not_found", status=404, loc=ID)
