"""The playground at / in a real Chromium: catalog, forms, summary, shape errors and training."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import httpx
import torch
from playwright.sync_api import Locator, Page, expect
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from app.examples import LENET_DIGITS, SEED_MODEL
from web.browser import OfflinePage

TRAINING_TIMEOUT_MS = 180_000  # includes starting the embedded Ray on a cold machine


def open_playground(offline_page: OfflinePage) -> Page:
    page = offline_page.page
    page.goto("/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    return page


def add_layer(page: Page, layer_type: str, **fields: str) -> Locator:
    page.select_option("#catalog", layer_type)
    page.click("#add-layer")
    card = page.locator("#layers > li").last
    expect(card.locator(".layer-head strong")).to_have_text(layer_type)
    for name, value in fields.items():
        card.locator(f'[data-field="{name}"] input').fill(value)
    return card


def card(page: Page, index: int) -> Locator:
    return page.locator(f'#layers > li[data-index="{index}"]')


def spec_json(page: Page) -> dict:
    return json.loads(page.locator("#spec-json").input_value())


def summary_rows(page: Page) -> list[list[str]]:
    return [
        [c.strip() for c in row]
        for row in page.locator("#summary tbody tr").evaluate_all(
            "rows => rows.map(r => Array.from(r.cells, c => c.textContent))"
        )
    ]


def test_catalog_lists_every_layer_type(offline_page: OfflinePage, server: str) -> None:
    page = open_playground(offline_page)
    catalog = httpx.get(f"{server}/v1/layers").json()
    layers = [entry for entry in catalog["data"] if not entry["graph_only"]]  # the list editor's
    options = page.locator("#catalog option").evaluate_all("os => os.map(o => o.value)")
    assert sorted(options) == sorted(entry["type"] for entry in layers)
    groups = page.locator("#catalog optgroup").evaluate_all("gs => gs.map(g => g.label)")
    assert set(groups) == {entry["category"] for entry in layers}
    # The presets are the summary endpoint's OpenAPI examples.
    examples = page.locator("#example option").evaluate_all("os => os.map(o => o.value)")
    assert {"seed", "small_cnn", "lenet_digits", "lstm", "vit_b_16", "gpt2_small", "tiny_llama"} <= set(
        examples
    )
    assert offline_page.outside == [] and offline_page.page_errors == []


def test_seed_model_built_from_the_forms_matches_pytorch(offline_page: OfflinePage) -> None:
    page = open_playground(offline_page)
    page.click("#clear")
    expect(page.locator("#layers > li")).to_have_count(0)
    expect(page.locator("#summary-status")).to_contain_text("at least 1 item")

    add_layer(page, "MyConv2d", in_channels="3", out_channels="6", kernel_size="3")
    add_layer(page, "ReLU")
    add_layer(page, "Flatten")
    add_layer(page, "MyLinear", out_features="10")
    page.fill("#input-shape", "2, 3, 8, 8")
    assert spec_json(page) == SEED_MODEL  # the JSON view follows the forms

    # The same model in plain PyTorch: MyConv2d wraps a bias-free Conv2d, MyLinear a Linear.
    torch_layers = [nn.Conv2d(3, 6, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(216, 10)]
    x = torch.zeros(2, 3, 8, 8)
    expected = []
    with FlopCounterMode(display=False) as flops:
        names = ["MyConv2d", "ReLU", "Flatten", "MyLinear"]
        for i, (layer, name) in enumerate(zip(torch_layers, names, strict=True)):
            x = layer(x)
            params = sum(p.numel() for p in layer.parameters())
            expected.append([f"{i} {name}", str(list(x.shape)), f"{params:,}"])
    expect(page.locator("#summary tbody tr")).to_have_count(4)
    expect(page.locator("#summary")).not_to_have_class(re.compile("stale"))
    assert [row[:3] for row in summary_rows(page)] == expected
    status = page.locator("#summary-status")
    expect(status).to_contain_text(
        f"{sum(p.numel() for m in torch_layers for p in m.parameters()):,} parameters"
    )
    expect(status).to_contain_text(f"{flops.get_total_flops():,} FLOPs")
    # Sizes left out are inferred, and shown where they were left out.
    expect(card(page, 3).locator('[data-field="in_features"] input')).to_have_attribute(
        "placeholder", "216 (inferred)"
    )
    offline_page.screenshot("playground-summary")
    assert offline_page.outside == [] and offline_page.page_errors == []


def test_repeat_copies_fold_into_one_block_and_tied_weights_are_named(offline_page: OfflinePage) -> None:
    """GPT-2 small's 12 blocks read as one "block x 12"; its head counts nothing of its own."""
    page = open_playground(offline_page)
    page.select_option("#example", "gpt2_small")
    expect(page.locator("#summary-status")).to_contain_text("124,439,808 parameters", timeout=30_000)
    expect(page.locator("#summary tbody tr")).to_have_count(6)
    names = [row[0] for row in summary_rows(page)]
    assert names == [
        "0 Embedding",
        "1 PositionalEmbedding",
        "2 Repeat (block \u00d7 12)",
        "2.0.0 TransformerEncoderLayer",
        "3 LayerNorm",
        "4 Linear",
    ]
    rows = summary_rows(page)
    assert rows[2][2] == f"{12 * 7_087_872:,}" and rows[3][2] == "7,087,872"
    assert rows[5][2] == "0 (weight tied to 0)"
    offline_page.screenshot("playground-repeat-folded")
    assert offline_page.outside == [] and offline_page.page_errors == []


def test_a_layer_unchecked_trainable_is_frozen(offline_page: OfflinePage) -> None:
    """Every layer's form has a `trainable` checkbox (from the schema), checked by default;
    unchecked, the spec says so and the summary counts those parameters as not trainable."""
    page = open_playground(offline_page)
    page.click("#clear")
    add_layer(page, "Linear", in_features="4", out_features="3")
    add_layer(page, "Linear", out_features="2")
    page.fill("#input-shape", "2, 4")
    box = card(page, 0).locator('[data-field="trainable"] input[type="checkbox"]')
    expect(box).to_be_checked()
    box.uncheck()
    expect(page.locator("#summary-status")).to_contain_text("23 parameters, 8 trainable", timeout=30_000)
    assert spec_json(page)["layers"][0]["trainable"] is False
    assert "trainable" not in spec_json(page)["layers"][1]
    assert offline_page.outside == [] and offline_page.page_errors == []


def test_reorder_remove_and_json_edits_stay_in_sync(offline_page: OfflinePage) -> None:
    page = open_playground(offline_page)
    page.select_option("#example", "seed")
    types = lambda: [layer["type"] for layer in spec_json(page)["layers"]]  # noqa: E731
    expect(page.locator("#layers > li")).to_have_count(4)
    card(page, 1).get_by_role("button", name="move down").click()
    assert types() == ["MyConv2d", "Flatten", "ReLU", "MyLinear"]
    card(page, 2).get_by_role("button", name="remove").click()
    assert types() == ["MyConv2d", "Flatten", "MyLinear"]
    expect(page.locator("#summary tbody tr")).to_have_count(3)

    edited = {"layers": [{"type": "Flatten"}, {"type": "Linear", "out_features": 4}]}
    page.fill("#spec-json", json.dumps(edited))
    expect(page.locator("#layers > li .layer-head strong")).to_have_text(["Flatten", "Linear"])
    expect(card(page, 1).locator('[data-field="out_features"] input')).to_have_value("4")
    expect(page.locator("#summary tbody tr")).to_have_count(2)
    page.fill("#spec-json", '{"layers": [')
    expect(page.locator("#json-error")).to_be_visible()
    expect(page.locator("#layers > li")).to_have_count(2)  # a broken edit is not applied


def test_shape_error_is_shown_on_the_offending_layer(offline_page: OfflinePage) -> None:
    page = open_playground(offline_page)
    page.select_option("#example", "seed")
    expect(page.locator("#summary tbody tr")).to_have_count(4)
    card(page, 3).locator('[data-field="in_features"] input').fill("7")

    bad = card(page, 3)
    expect(bad).to_have_class(re.compile("has-error"))
    expect(bad.locator(".layer-error")).to_contain_text("expected input size 7")
    expect(bad.locator('[data-field="in_features"]')).to_have_class(re.compile("error"))
    expect(page.locator("#layers > li.has-error")).to_have_count(1)
    expect(page.locator("#summary")).to_have_class(re.compile("stale"))
    offline_page.screenshot("playground-shape-error")

    # Inside a container, the top-level layer holding the mistake is marked.
    nested = {
        "layers": [
            {"type": "Flatten"},
            {"type": "Residual", "layers": [{"type": "Linear", "out_features": 5}]},
        ]
    }
    page.fill("#spec-json", json.dumps(nested))
    expect(card(page, 1)).to_have_class(re.compile("has-error"))
    expect(card(page, 1).locator(".layer-error")).to_contain_text("Residual")
    expect(card(page, 0)).not_to_have_class(re.compile("has-error"))

    # Fixing it clears the mark.
    card(page, 1).locator('[data-field="layers"] textarea').fill('[{"type": "Linear", "out_features": 192}]')
    expect(page.locator("#layers > li.has-error")).to_have_count(0)
    expect(page.locator("#summary")).not_to_have_class(re.compile("stale"))


def test_training_draws_a_point_per_epoch_from_the_event_stream(
    offline_page: OfflinePage, server: str
) -> None:
    page = open_playground(offline_page)
    page.select_option("#example", "lenet_digits")
    assert spec_json(page) == LENET_DIGITS
    epochs = 3
    page.fill('#train-form [name="epochs"]', str(epochs))
    page.click("#train")

    status = page.locator("#train-status")
    expect(status).to_contain_text("succeeded", timeout=TRAINING_TIMEOUT_MS)
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-points", str(epochs))
    expect(chart).to_have_attribute("data-live-points", str(epochs))  # one `epoch` event each
    expect(chart.locator("canvas")).to_be_visible()
    expect(page.locator("#history tbody tr")).to_have_count(epochs)
    expect(page.locator("#train")).to_be_enabled()
    expect(page.locator("#cancel")).to_be_disabled()

    # The table shows exactly what the API recorded.
    job_id = re.search(r"Job (\w+)", status.inner_text()).group(1)
    job = httpx.get(f"{server}/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded"
    shown = page.locator("#history tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells, c => c.textContent))"
    )
    assert shown == [
        [str(h["epoch"]), f"{h['train_loss']:.4f}", f"{h['val_loss']:.4f}", f"{h['val_accuracy']:.3f}"]
        for h in job["history"]
    ]
    assert job["history"][-1]["train_loss"] < job["history"][0]["train_loss"]  # it really learned

    # The trained model's files download from the buttons, exactly as the API serves them.
    downloads = page.locator("#job-downloads")
    expect(downloads).to_be_visible()
    for what, name in (("weights", f"{job_id}.safetensors"), ("pytorch", f"{job_id}.py")):
        with page.expect_download() as saved:
            downloads.locator(f'button[data-what="{what}"]').click()
        assert saved.value.suggested_filename == name
        content = Path(saved.value.path()).read_bytes()
        if what == "weights":
            assert hashlib.sha256(content).hexdigest() == job["weights"]["sha256"]
        else:
            assert b"def build_model() -> nn.Module:" in content
    expect(page.locator("#job-download-status")).to_contain_text(f"Saved {job_id}.py")
    offline_page.screenshot("playground-training")
    assert offline_page.outside == [] and offline_page.page_errors == []


def test_the_model_downloads_as_code(offline_page: OfflinePage) -> None:
    page = open_playground(offline_page)
    page.select_option("#example", "lenet_digits")
    with page.expect_download() as saved:
        page.click('#model-downloads button[data-format="pytorch"]')
    assert saved.value.suggested_filename == "model.py"
    source = Path(saved.value.path()).read_text()
    assert "def build_model() -> nn.Module:" in source and "import torch" in source
    assert offline_page.page_errors == []


def test_cancel_stops_a_running_job(offline_page: OfflinePage, server: str) -> None:
    page = open_playground(offline_page)
    page.select_option("#example", "lenet_digits")
    page.fill('#train-form [name="epochs"]', "100")
    page.fill('#train-form [name="batch_size"]', "1")  # ~144k steps: long enough to be caught running
    page.click("#train")
    status = page.locator("#train-status")
    expect(status).to_contain_text("Job ", timeout=30_000)  # accepted
    expect(status).to_contain_text("running", timeout=TRAINING_TIMEOUT_MS)
    page.click("#cancel")
    expect(status).to_contain_text("cancelled", timeout=30_000)
    expect(page.locator("#train")).to_be_enabled()
    job_id = re.search(r"Job (\w+)", status.inner_text()).group(1)
    assert httpx.get(f"{server}/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_a_model_that_does_not_fit_the_dataset_is_refused_on_its_layer(offline_page: OfflinePage) -> None:
    page = open_playground(offline_page)
    page.select_option("#example", "seed")  # 3 input channels; digits have 1
    expect(page.locator("#summary tbody tr")).to_have_count(4)
    page.click("#train")
    expect(page.locator("#train-status")).to_contain_text("Not started, HTTP 422")
    expect(card(page, 0)).to_have_class(re.compile("has-error"))
    expect(card(page, 0).locator(".layer-error")).to_contain_text("in_channels")


def test_loss_optimizer_and_dataset_forms_come_from_the_jobs_schema(
    offline_page: OfflinePage, server: str
) -> None:
    page = open_playground(offline_page)
    schemas = httpx.get(f"{server}/openapi.json").json()["components"]["schemas"]["JobCreate"]["properties"]
    for field in ["dataset", "loss", "optimizer"]:
        choices = page.locator(f'[name="{field}-choice"] option').evaluate_all("os => os.map(o => o.value)")
        union = next(s for s in [schemas[field], *schemas[field].get("anyOf", [])] if "discriminator" in s)
        assert sorted(choices) == sorted(union["discriminator"]["mapping"])  # loss: an optional union

    page.select_option("#example", "lenet_digits")
    page.select_option('[name="optimizer-choice"]', "SGD")
    optimizer = page.locator('.choice[data-field="optimizer"]')
    optimizer.locator('[data-field="lr"] input').fill("0.05")
    optimizer.locator('[data-field="momentum"] input').fill("0.9")
    optimizer.locator('[data-field="nesterov"] input').check()
    page.fill('#train-form [name="epochs"]', "2")
    page.click("#train")
    status = page.locator("#train-status")
    expect(status).to_contain_text("succeeded", timeout=TRAINING_TIMEOUT_MS)

    job_id = re.search(r"Job (\w+)", status.inner_text()).group(1)
    request = httpx.get(f"{server}/v1/jobs/{job_id}").json()["request"]
    assert request["optimizer"] | {"lr": 0.05, "momentum": 0.9, "nesterov": True} == request["optimizer"]
    assert request["optimizer"]["type"] == "SGD"
    assert request["loss"]["type"] == "CrossEntropyLoss" and request["dataset"]["name"] == "digits"
    assert request["epochs"] == 2


# The placeholders that do not fit their input: the text's width in the input's own font, against
# the room inside its padding.
CUT_OFF = """inputs => inputs.filter(i => i.placeholder && i.offsetParent !== null).map(i => {
  const style = getComputedStyle(i);
  const context = document.createElement("canvas").getContext("2d");
  context.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
  const room = i.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {field: i.name, placeholder: i.placeholder, width: context.measureText(i.placeholder).width, room};
}).filter(f => f.width > f.room)"""


def test_every_placeholder_shows_its_default_exactly_and_whole(
    offline_page: OfflinePage, server: str
) -> None:
    """LayerNorm's eps (1e-5) showed as "default 0.0000", Adam's betas as "default 0.9, 0.99": each
    placeholder was cut by its input."""
    page = open_playground(offline_page)
    catalog = httpx.get(f"{server}/v1/layers").json()["data"]
    types = [entry["type"] for entry in catalog if not entry["graph_only"]]  # the list editor's
    page.fill("#spec-json", json.dumps({"layers": [{"type": t} for t in types]}))  # one card of each
    expect(page.locator("#layers > li")).to_have_count(len(types))
    layer_norm = card(page, types.index("LayerNorm"))
    expect(layer_norm.locator('[data-field="eps"] input')).to_have_attribute("placeholder", "default 1e-5")
    optimizer = page.locator('.choice[data-field="optimizer"]')
    expect(optimizer.locator('[data-field="eps"] input')).to_have_attribute("placeholder", "default 1e-8")
    assert page.locator("input").evaluate_all(CUT_OFF) == []
    offline_page.screenshot("playground-small-defaults", layer_norm)
    # The same numbers in the training panel's losses (a loss of 2e-5 showed as 0.0000).
    shown = page.evaluate(
        """async () => {
          const { exact, fixed } = await import("/static/playground/numbers.js");
          return [exact(1e-5), exact(0.25), exact(65504), exact(3.4e38), exact(-2e-7),
                  fixed(2e-5, 4), fixed(1.23456, 4), fixed(0, 4), fixed(-3e-7, 3), fixed(0.00005, 4)];
        }"""
    )
    assert shown == [
        "1e-5",
        "0.25",
        "65504",
        "3.4e38",
        "-2e-7",
        "2.000e-5",
        "1.2346",
        "0.0000",
        "-3.00e-7",
        "0.0001",
    ]

    page.select_option("#example", "seed")  # the sizes the summary infers are placeholders too
    expect(page.locator("#summary tbody tr")).to_have_count(4)
    expect(card(page, 3).locator('[data-field="in_features"] input')).to_have_attribute(
        "placeholder", re.compile("inferred")
    )
    assert page.locator("input").evaluate_all(CUT_OFF) == []
