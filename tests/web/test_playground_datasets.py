"""The playground's Upload data panel in a real Chromium: a file picked or dropped is uploaded
to POST /v1/datasets and its description shown, as the API gives it; a refused file shows why."""

from __future__ import annotations

import base64
import re

import httpx
from playwright.sync_api import Page, expect

from tests import dataset_files as make
from tests.test_datajobs import digits_arrays
from web.browser import OfflinePage
from web.test_playground_browser import TRAINING_TIMEOUT_MS, open_playground


def array_rows(page: Page) -> list[list[str]]:
    return page.locator("#dataset-arrays tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells, c => c.textContent))"
    )


def test_a_picked_file_is_uploaded_and_described(offline_page: OfflinePage, server: str) -> None:
    page = open_playground(offline_page)
    data = make.npz(make.digits())
    page.set_input_files(
        "#data-file", files=[{"name": "digits.npz", "mimeType": "application/zip", "buffer": data}]
    )
    expect(page.locator("#upload-status")).to_contain_text("digits.npz")
    expect(page.locator("#dataset-summary")).to_contain_text("npz: 1797 samples")
    stored = httpx.get(f"{server}/v1/datasets").json()["data"]
    described = next(d for d in stored if d["name"] == "digits.npz")
    rows = array_rows(page)
    assert [row[:3] for row in rows] == [
        [a["name"], str(a["shape"]).replace(" ", "").replace(",", ", "), a["dtype"]]
        for a in described["arrays"]
    ]
    assert rows[1][6].startswith("0: 178, 1: 182")  # the labels' classes and counts
    expect(page.locator("#stored-datasets")).to_have_value(described["id"])
    offline_page.screenshot("playground-upload", page.locator("#upload"))
    assert not offline_page.page_errors and not offline_page.outside


def test_a_dropped_image_zip_is_described_and_a_bad_one_refused(offline_page: OfflinePage) -> None:
    page = open_playground(offline_page)
    members, _, labels = make.digit_images(50)
    page.fill("#data-resize", "16x16")
    drop(page, "digits.zip", make.image_zip(members))
    expect(page.locator("#dataset-summary")).to_contain_text("images 16x16, 1 channel(s)")
    assert array_rows(page)[0][:2] == ["image", f"[{len(labels)}, 1, 16, 16]"]
    page.fill("#data-resize", "")
    drop(page, "bad.zip", make.image_zip({"cat/a.png": b"not an image"}))
    expect(page.locator("#upload-status")).to_contain_text("Refused (HTTP 422)")
    expect(page.locator("#upload-status")).to_contain_text("cat/a.png")


def drop(page: Page, name: str, data: bytes) -> None:
    """Drops a file on the panel as a user's drag and drop does (a DataTransfer holding it)."""
    page.evaluate(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name));
            const init = { dataTransfer: transfer, bubbles: true, cancelable: true };
            document.querySelector("#drop-zone").dispatchEvent(new DragEvent("drop", init));
        }""",
        [name, base64.b64encode(data).decode()],
    )


def test_the_picked_inputs_and_targets_train_a_job(offline_page: OfflinePage, server: str) -> None:
    page = open_playground(offline_page)
    page.select_option("#example", "lenet_digits")
    page.fill('#train-form [name="epochs"]', "1")
    data = make.npz({"label": digits_arrays()["y"], "pixels": digits_arrays()["x"]})
    page.set_input_files(
        "#data-file", files=[{"name": "d.npz", "mimeType": "application/zip", "buffer": data}]
    )
    expect(page.locator("#dataset-summary")).to_contain_text("npz: 1797 samples")
    # The class labels are offered as the targets, the other array as the inputs.
    assert page.locator("#dataset-targets").input_value() == "label"
    assert page.locator("#dataset-inputs option:checked").all_inner_texts() == ["pixels"]
    page.click("#train-on-dataset")
    status = page.locator("#train-status")
    expect(status).to_contain_text("succeeded", timeout=TRAINING_TIMEOUT_MS)
    job_id = re.search(r"Job (\w+)", status.inner_text()).group(1)
    request = httpx.get(f"{server}/v1/jobs/{job_id}").json()["request"]
    dataset = request["dataset"]
    assert (dataset["name"], dataset["inputs"], dataset["targets"]) == ("uploaded", "pixels", "label")
    assert page.locator('[name="dataset-choice"]').input_value() == "uploaded"
    assert not offline_page.page_errors and not offline_page.outside
