"""The playground's graph editor in a real Chromium: a graph preset drawn as boxes and arrows, a
node added, wired, edited and deleted; the summary's shapes on the boxes, checked against torch."""

from __future__ import annotations

import json
import re

import httpx
import torch
from playwright.sync_api import Page, expect
from torch import nn

from web.browser import OfflinePage
from web.test_playground_browser import open_playground, spec_json


def box(page: Page, name: str):
    return page.locator(f'#graph .box[data-name="{name}"]')


def drawn_edges(page: Page) -> set[tuple[str, str, str]]:
    return {
        tuple(e)
        for e in page.locator("#graph .edge").evaluate_all(
            "es => es.map(e => [e.dataset.from, e.dataset.to, e.dataset.arg])"
        )
    }


def spec_edges(graph: dict) -> set[tuple[str, str, str]]:
    """The edges as the contract defines them: each node's input, inputs and tensor arguments
    (any other field naming an input or a node)."""
    names = set(graph["inputs"]) | {node["name"] for node in graph["nodes"]}
    found = set()
    for node in graph["nodes"]:
        for field, value in node.items():
            if field == "inputs":
                found |= {(ref, node["name"], f"inputs.{k}") for k, ref in enumerate(value)}
            elif field not in ("name", "type") and isinstance(value, str) and value.split(".")[0] in names:
                found.add((value, node["name"], field))
    return found


def box_x(page: Page) -> dict[str, float]:
    """Each box's left edge, read from its transform."""
    return {
        name: float(re.match(r"translate\(([\d.]+),", transform).group(1))
        for name, transform in page.locator("#graph .box").evaluate_all(
            "bs => bs.map(b => [b.dataset.name, b.getAttribute('transform')])"
        )
    }


def test_a_graph_preset_is_drawn_left_to_right_and_a_node_is_added_wired_and_deleted(
    offline_page: OfflinePage,
) -> None:
    page = open_playground(offline_page)
    page.select_option("#example", "bert_small_graph")
    expect(page.locator("#graph-editor")).to_be_visible()
    expect(page.locator("#sequence-editor")).to_be_hidden()  # the list editor is the sequence form's
    graph = spec_json(page)
    assert set(graph["inputs"]) == {"tokens", "types", "mask"}

    # A box per input and node, an arrow per edge.
    expect(page.locator("#graph .box")).to_have_count(len(graph["inputs"]) + len(graph["nodes"]))
    expected = spec_edges(graph)
    assert ("mask", "enc", "src_key_padding_mask") in expected and len(expected) == 11
    expect(page.locator("#graph .edge")).to_have_count(len(expected))
    assert drawn_edges(page) == expected
    # Left to right by depth: inputs in the first column, every arrow pointing right.
    x = box_x(page)
    assert {x[name] for name in graph["inputs"]} == {min(x.values())}
    assert all(x[src.split(".")[0]] < x[dst] for src, dst, _ in expected)
    # Arrows are labelled with their argument unless it is "input"; the outputs are marked.
    mask_edge = page.locator('#graph .edge[data-from="mask"][data-to="enc"]')
    expect(mask_edge.locator(".edge-label")).to_have_text("src_key_padding_mask")
    expect(page.locator('#graph .edge[data-arg="input"] .edge-label')).to_have_count(0)
    expect(box(page, "enc").locator(".box-output")).to_have_text("⇒ hidden")
    expect(box(page, "pooled")).to_have_class(re.compile(r"\boutput\b"))
    offline_page.screenshot("playground-graph", page.locator("#graph-scroll"))

    # Add a node wired to an existing one, as a new graph output.
    page.select_option("#node-type", "Linear")
    page.fill("#node-name", "head")
    page.select_option("#node-from", ["cls"])
    page.fill("#node-output", "logits")
    page.click("#add-node")
    expect(box(page, "head")).to_be_visible()
    expect(page.locator("#graph .box")).to_have_count(len(graph["inputs"]) + len(graph["nodes"]) + 1)
    expect(page.locator('#graph .edge[data-from="cls"][data-to="head"]')).to_have_count(1)
    graph = spec_json(page)
    assert graph["nodes"][-1] == {"name": "head", "type": "Linear", "input": "cls"}
    assert graph["outputs"]["logits"] == "head"
    assert drawn_edges(page) == spec_edges(graph)
    assert box_x(page)["head"] > box_x(page)["cls"]
    offline_page.screenshot("playground-graph-node-added", page.locator("#builder"))

    # Its form is open (the new node is chosen): edit a field, then re-wire its input.
    panel = page.locator('#graph-panel .box-panel[data-name="head"]')
    panel.locator('[data-field="out_features"] input').fill("3")
    expect(page.locator("#spec-json")).to_have_value(re.compile(r'"out_features": 3'))
    panel.locator('.wire[data-arg="input"] select').select_option("enc")
    expect(page.locator('#graph .edge[data-from="enc"][data-to="head"]')).to_have_count(1)
    expect(page.locator('#graph .edge[data-from="cls"][data-to="head"]')).to_have_count(0)
    assert spec_json(page)["nodes"][-1] == {
        "name": "head",
        "type": "Linear",
        "input": "enc",
        "out_features": 3,
    }

    # A tensor argument is unwired, then wired again from the list of refs, and drawn labelled.
    box(page, "enc").click()
    enc = page.locator('#graph-panel .box-panel[data-name="enc"]')
    enc.get_by_role("button", name="unwire src_key_padding_mask").click()
    expect(mask_edge).to_have_count(0)
    assert "src_key_padding_mask" not in spec_json(page)["nodes"][5]
    enc.locator(".add-wire select").first.select_option("src_key_padding_mask")
    enc.locator(".add-wire select").last.select_option("mask")
    enc.get_by_role("button", name="wire", exact=True).click()
    expect(mask_edge.locator(".edge-label")).to_have_text("src_key_padding_mask")
    assert spec_json(page)["nodes"][5]["src_key_padding_mask"] == "mask"

    # Deleting it takes its wires and its output away.
    box(page, "head").click()
    page.locator('#graph-panel .box-panel[data-name="head"]').get_by_role("button", name="delete").click()
    expect(box(page, "head")).to_have_count(0)
    assert "logits" not in spec_json(page)["outputs"]
    assert drawn_edges(page) == spec_edges(spec_json(page))

    # Clicking an input opens its shape; a duplicate name is refused before it is sent.
    box(page, "mask").click()
    expect(page.locator('#graph-panel [name="shape"]')).to_have_value("2, 16")
    page.fill("#node-name", "enc")
    page.click("#add-node")
    expect(page.locator("#node-add-error")).to_contain_text('"enc" is taken')
    assert offline_page.outside == [] and offline_page.page_errors == []


def test_a_graph_typed_into_the_json_view_is_drawn_and_the_sequence_form_comes_back(
    offline_page: OfflinePage,
) -> None:
    page = open_playground(offline_page)
    graph = {
        "inputs": {"x": {"shape": [2, 8], "dtype": "float32"}},
        "nodes": [
            {"name": "a", "type": "Linear", "out_features": 4, "input": "x"},
            {"name": "b", "type": "Linear", "out_features": 4, "input": "x"},
            {"name": "sum", "type": "Add", "inputs": ["a", "b"]},
        ],
        "outputs": {"y": "sum"},
    }
    page.fill("#spec-json", json.dumps(graph))
    page.locator("#spec-json").blur()  # the JSON view follows the editor again
    expect(page.locator("#graph .box")).to_have_count(4)
    assert drawn_edges(page) == {
        ("x", "a", "input"),
        ("x", "b", "input"),
        ("a", "sum", "inputs.0"),
        ("b", "sum", "inputs.1"),
    }
    expect(page.locator('#graph .edge[data-to="sum"] .edge-label')).to_have_text(["inputs.0", "inputs.1"])
    # The encoder-decoder preset: the decoder reads the encoder's output as `memory`.
    page.select_option("#example", "encoder_decoder_graph")
    memory = page.locator('#graph .edge[data-from="enc_norm"][data-to="decoder"][data-arg="memory"]')
    expect(memory.locator(".edge-label")).to_have_text("memory")
    assert drawn_edges(page) == spec_edges(spec_json(page))

    page.select_option("#example", "seed")
    expect(page.locator("#sequence-editor")).to_be_visible()
    expect(page.locator("#graph-editor")).to_be_hidden()
    expect(page.locator("#layers > li")).to_have_count(4)
    assert offline_page.page_errors == []


def bert_small() -> tuple[dict[str, nn.Module], dict[str, torch.Tensor]]:
    """The BERT-style preset built by hand in torch, run on real ids: each node's output."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True)
    modules = {
        "tok": nn.Embedding(1000, 64),
        "typ": nn.Embedding(2, 64),
        "pos": nn.Embedding(16, 64),
        "norm": nn.LayerNorm(64),
        "enc": nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
        "pool": nn.Linear(64, 64),
    }
    tokens, types = torch.randint(0, 1000, (2, 16)), torch.randint(0, 2, (2, 16))
    mask = torch.zeros(2, 16, dtype=torch.bool)
    out = {"tok": modules["tok"](tokens), "typ": modules["typ"](types)}
    out["emb"] = out["tok"] + out["typ"]
    out["pos"] = out["emb"] + modules["pos"].weight[:16]
    out["norm"] = modules["norm"](out["pos"])
    out["enc"] = modules["enc"].eval()(out["norm"], src_key_padding_mask=mask)
    out["cls"] = out["enc"][:, 0]
    out["pool"] = modules["pool"](out["cls"])
    out["pooled"] = torch.tanh(out["pool"])
    return modules, out


def test_the_graph_summary_puts_torch_shapes_on_the_boxes_and_errors_on_the_node(
    offline_page: OfflinePage,
) -> None:
    page = open_playground(offline_page)
    page.select_option("#example", "bert_small_graph")
    modules, outputs = bert_small()
    params = sum(p.numel() for m in modules.values() for p in m.parameters())
    expect(page.locator("#summary-status")).to_contain_text(f"{params:,} parameters")
    expect(page.locator("#summary")).not_to_have_class(re.compile("stale"))
    for name, tensor in outputs.items():
        expect(box(page, name).locator(".box-shape")).to_have_text(str(list(tensor.shape)))
    expect(box(page, "mask").locator(".box-shape")).to_have_text("[2, 16]")
    expect(page.locator("#summary-status")).to_contain_text(f"hidden {list(outputs['enc'].shape)}")

    # A wrong size is a 422 at the node: its box is marked, its form names the field.
    box(page, "pool").click()
    page.locator('#graph-panel [data-field="in_features"] input').fill("7")
    expect(box(page, "pool")).to_have_class(re.compile("has-error"))
    expect(page.locator("#graph .box.has-error")).to_have_count(1)
    expect(page.locator("#graph-panel .layer-error")).to_contain_text("7")
    expect(page.locator('#graph-panel [data-field="in_features"]')).to_have_class(re.compile("error"))
    page.locator('#graph-panel [data-field="in_features"] input').fill("")
    expect(page.locator("#graph .box.has-error")).to_have_count(0)

    # The graph form's own types (merges, splits) have their forms from the server's schema.
    assert "Add" in page.locator("#node-type option").all_inner_texts()
    box(page, "emb").click()
    expect(page.locator("#graph-panel .desc")).to_contain_text("sum")
    expect(page.locator('#graph-panel .wire[data-arg="inputs.1"] select')).to_have_value("typ")
    assert offline_page.page_errors == []


def test_the_encoder_decoder_preset_has_the_parameters_of_torch(offline_page: OfflinePage) -> None:
    page = open_playground(offline_page)
    page.select_option("#example", "encoder_decoder_graph")
    enc = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True)
    dec = nn.TransformerDecoderLayer(64, 4, dim_feedforward=128, batch_first=True)
    modules = [
        nn.Embedding(1000, 64),
        nn.Embedding(1000, 64),
        nn.TransformerEncoder(enc, 2),
        nn.LayerNorm(64),
        nn.TransformerDecoder(dec, 2),
        nn.LayerNorm(64),
        nn.Linear(64, 1000),
    ]
    params = sum(p.numel() for m in modules for p in m.parameters())
    expect(page.locator("#summary-status")).to_contain_text(f"{params:,} parameters")
    expect(page.locator("#summary-status")).to_contain_text("logits [2, 12, 1000]")
    expect(box(page, "decoder").locator(".box-shape")).to_have_text("[2, 12, 64]")
    assert offline_page.page_errors == []


def test_the_graph_forms_types_are_in_add_node_and_not_in_the_layer_list(
    offline_page: OfflinePage, server: str
) -> None:
    page = open_playground(offline_page)
    catalog = httpx.get(f"{server}/v1/layers").json()["data"]
    graph_only = {entry["type"] for entry in catalog if entry["graph_only"]}
    layers = {entry["type"] for entry in catalog if not entry["graph_only"]}
    assert {"Add", "Multiply", "Concat", "MatMul", "Split", "Chunk"} <= graph_only
    listed = set(page.locator("#catalog option").evaluate_all("os => os.map(o => o.value)"))
    assert listed == layers  # the sequence form's list editor: no merge or split
    page.select_option("#example", "bert_small_graph")
    node_types = page.locator("#node-type option").evaluate_all("os => os.map(o => o.value)")
    assert sorted(node_types) == sorted(layers | graph_only)  # each once: Concat both ways
    group = page.locator('#node-type optgroup[label="graph form"] option').all_inner_texts()
    assert set(group) == graph_only - layers

    # Concat from two refs is the merge: wired by `inputs`, its form the merge's (`dim`).
    page.select_option("#node-type", "Concat")
    page.fill("#node-name", "both")
    page.select_option("#node-from", ["tok", "typ"])
    page.click("#add-node")
    assert spec_json(page)["nodes"][-1] == {"name": "both", "type": "Concat", "inputs": ["tok", "typ"]}
    panel = page.locator('#graph-panel .box-panel[data-name="both"]')
    expect(panel.locator('.wire[data-arg="inputs.1"] select')).to_have_value("typ")
    expect(panel.locator('[data-field="dim"] input')).to_have_count(1)
    expect(panel.locator('[data-field="branches"]')).to_have_count(0)
    assert offline_page.page_errors == []
