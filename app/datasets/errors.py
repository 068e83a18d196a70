"""What is wrong with an upload, as a 4xx in FastAPI's error format (``detail: [{loc, msg, type,
ctx}]``), raised anywhere from receiving the bytes to describing their arrays."""

from __future__ import annotations

from typing import Any

FILE = ("body", "file")


class DatasetError(Exception):
    """A refused upload or dataset request: ``status`` (422 unless said), and where and why."""

    def __init__(
        self,
        msg: str,
        *,
        kind: str = "dataset_invalid",
        status: int = 422,
        loc: tuple[str | int, ...] = FILE,
        ctx: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(msg)
        self.msg, self.kind, self.status, self.loc, self.ctx = msg, kind, status, loc, ctx

    def detail(self) -> list[dict[str, Any]]:
        error: dict[str, Any] = {"type": self.kind, "loc": list(self.loc), "msg": self.msg}
        if self.ctx is not None:
            error["ctx"] = self.ctx
        return [error]


def too_large(what: str, setting: str, limit: int) -> DatasetError:
    """A 413 naming the setting that caps ``what``."""
    return DatasetError(
        f"{what} exceeds {setting} ({limit} bytes)",
        kind="dataset_too_large",
        status=413,
        ctx={"limit": limit, "setting": setting},
    )


def in_array(name: str, msg: str, **ctx: Any) -> DatasetError:
    """A 422 about one array (or column, or zip member) of the file, located at it."""
    return DatasetError(msg, loc=(*FILE, name), ctx=ctx or None)
