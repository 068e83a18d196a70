"""Every setting is documented in the README's settings table, with its real default."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.core.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
ROWS = dict(re.findall(r"^\| `(MB_[A-Z0-9_]+)` \| ([^|]*) \|", README, re.M))


def _shown(default: object) -> str:
    """A default as the environment would spell it (JSON for lists, numbers and booleans)."""
    return str(default) if isinstance(default, (str, Path)) else json.dumps(default)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_setting_is_in_the_readme(name: str) -> None:
    variable = f"MB_{name.upper()}"
    assert variable in ROWS, f"README's settings table has no row for {variable}"
    default = Settings.model_fields[name].default
    if default is not None:
        assert ROWS[variable].strip() == f"`{_shown(default)}`", variable
