"""Writes the golden summaries `tests/test_golden_summaries.py` compares against (byte for byte).

Run from a checkout of the commit whose answers are the reference:
    PYTHONPATH=. .venv/bin/python tests/golden/make_golden.py
Each case is `<name>.request.json` (the summary request) and `<name>.response.json` (the exact body).
"""

from __future__ import annotations

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

from fastapi.testclient import TestClient  # noqa: E402
from reference_specs import CASES  # noqa: E402

from app.main import app  # noqa: E402

if __name__ == "__main__":
    client = TestClient(app)
    for name, body in CASES.items():
        response = client.post("/v1/models/summary", json=body)
        assert response.status_code == 200, (name, response.text[:500])
        (HERE / f"{name}.request.json").write_text(json.dumps(body, indent=1) + "\n")
        (HERE / f"{name}.response.json").write_bytes(response.content)
        print(name, len(response.content), "bytes")
