"""The layer types a graph needs, given their tensor arguments by name (``tensor_args``): a decoder's
``memory``, attention's ``key``/``value``, torch's masks, a recurrent layer's state. Each is compared
with torch itself (tests/test_registry.py compares outputs and gradients with copied weights);
here: what the masks mean, the counts at nn.Transformer's size, FLOPs and saved-for-backward bytes
given the tensor arguments, and the sequence form refusing what only a graph can give.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from test_registry import SAMPLES, VARIANTS, built_pair, tensor_args
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from layers import LAYER_SPECS
from layers.analysis.attention import device_attention
from layers.analysis.memory import SavedTensors, _recurrent_measured
from layers.export.onnx_export import OPSET
from layers.language.base import LayerSpec
from layers.language.errors import ShapeError
from layers.language.flops import FlopCounter


def spec_of(layer: dict) -> LayerSpec:
    return LAYER_SPECS[layer["type"]].model_validate(layer)


def encoder(**fields: object) -> nn.Module:
    torch.manual_seed(0)
    layer = {"type": "TransformerEncoderLayer", "nhead": 2, "dim_feedforward": 16, "dropout": 0.0}
    return spec_of({**layer, **fields}).infer((2, 6, 8)).build().eval()


def padding_mask(lengths: list[int], steps: int, left: bool = False) -> torch.Tensor:
    """[B, T], True at the padding (torch's key_padding_mask): after each sequence, or before it."""
    positions = torch.arange(steps)[None, :]
    lengths_ = torch.tensor(lengths)[:, None]
    return positions < steps - lengths_ if left else positions >= lengths_


@pytest.mark.parametrize("causal", [False, True])
def test_padding_changes_nothing_in_the_unpadded_outputs(causal: bool) -> None:
    """Causal, the padding comes first (left padding), where later tokens would see it."""
    model, mask = encoder(causal=causal), padding_mask([4, 6], 6, left=causal)
    real = ~mask[0]
    x = torch.randn(2, 6, 8)
    changed = x.clone()
    changed[0, mask[0]] = torch.randn(2, 8)  # the padding of the first sequence
    with torch.no_grad():
        y, y_changed = model(x, src_key_padding_mask=mask), model(changed, src_key_padding_mask=mask)
        unmasked = model(x), model(changed)
    torch.testing.assert_close(y[0, real], y_changed[0, real])
    torch.testing.assert_close(y[1], y_changed[1])
    # The control: without the mask the unpadded outputs see the padding.
    assert not torch.allclose(unmasked[0][0, real], unmasked[1][0, real])


def test_causal_and_a_padding_mask_both_apply() -> None:
    model, mask = encoder(causal=True), padding_mask([6, 3], 6)
    x = torch.randn(2, 6, 8)
    changed = x.clone()
    changed[:, 2] += 1.0  # a real token of both sequences: only its own and later outputs change
    with torch.no_grad():
        y, y_changed = model(x, src_key_padding_mask=mask), model(changed, src_key_padding_mask=mask)
    torch.testing.assert_close(y[:, :2], y_changed[:, :2])
    assert not torch.allclose(y[:, 2], y_changed[:, 2])


def test_a_causal_decoder_with_memory_is_torchs_with_a_causal_target_mask() -> None:
    """The `causal` flag is torch's tgt_is_causal with the generated mask, memory padding included."""
    torch.manual_seed(0)
    spec = spec_of({"type": "TransformerDecoderLayer", "nhead": 4, "dim_feedforward": 32, "causal": True})
    ours = spec.infer((2, 5, 16)).build().eval()
    theirs = nn.TransformerDecoderLayer(16, 4, 32, batch_first=True).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x, memory, padding = torch.randn(2, 5, 16), torch.randn(2, 7, 16), padding_mask([7, 4], 7)
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    with torch.no_grad():
        expected = theirs(x, memory, tgt_mask=mask, tgt_is_causal=True, memory_key_padding_mask=padding)
        torch.testing.assert_close(ours(x, memory, memory_key_padding_mask=padding), expected)
        assert not torch.allclose(ours(x, memory), expected)  # the memory padding matters


def test_cross_attention_attends_to_the_key_and_value_given() -> None:
    torch.manual_seed(0)
    spec = spec_of({"type": "MultiheadAttention", "num_heads": 2, "kdim": 6, "vdim": 4}).infer((2, 5, 8))
    assert (spec.kdim, spec.vdim) == (6, 4)
    ours = spec.build().eval()
    theirs = nn.MultiheadAttention(8, 2, batch_first=True, kdim=6, vdim=4).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x, key, value = torch.randn(2, 5, 8), torch.randn(2, 3, 6), torch.randn(2, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, key, value), theirs(x, key, value, need_weights=False)[0])


def test_nn_transformer_counts_from_its_layer_types() -> None:
    """nn.Transformer(d_model=512, nhead=8, 6 + 6 layers, 2048): 44,140,544 parameters, as six
    encoder layers, six decoder layers and the two final norms built from specs (on meta)."""
    with torch.device("meta"):
        theirs = nn.Transformer(512, 8, 6, 6, 2048, batch_first=True)
        layers = {
            kind: spec_of({"type": kind, "nhead": 8}).infer((1, 1, 512)).build()
            for kind in ("TransformerEncoderLayer", "TransformerDecoderLayer")
        }
    count = {kind: sum(p.numel() for p in layer.parameters()) for kind, layer in layers.items()}
    ours = 6 * count["TransformerEncoderLayer"] + 6 * count["TransformerDecoderLayer"] + 2 * 2 * 512
    assert ours == sum(p.numel() for p in theirs.parameters()) == 44_140_544
    decoder = theirs.decoder.layers[0]
    names = {name: tuple(p.shape) for name, p in decoder.named_parameters()}
    assert {name: tuple(p.shape) for name, p in layers["TransformerDecoderLayer"].named_parameters()} == names


def flops(run: object) -> int:
    with FlopCounterMode(display=False) as counter:
        run()  # type: ignore[operator]
    return counter.get_total_flops()


GIVEN = [name for name, sample in {**SAMPLES, **VARIANTS}.items() if sample.tensors]


@pytest.mark.parametrize("name", GIVEN)
def test_the_trace_given_tensor_arguments_counts_torchs_flops(name: str) -> None:
    """``LayerSpec.trace`` on meta with the tensor arguments: torch's output shapes and FLOPs."""
    sample = {**SAMPLES, **VARIANTS}[name]
    spec = spec_of(sample.spec).infer(tuple(sample.input_shape))
    real = tensor_args(sample)
    with torch.device("meta"):
        module, reference = spec.build(), sample.reference()
    x = torch.empty(sample.input_shape, device="meta")
    tensors = {k: torch.empty(t.shape, dtype=t.dtype, device="meta") for k, t in real.items()}
    out, counted = spec.trace(module, x, FlopCounter(), **tensors)
    assert counted == flops(lambda: reference(x, **tensors))
    _, theirs = built_pair(sample)
    with torch.no_grad():
        expected = theirs(torch.randn(sample.input_shape), **real)
    shapes = [t.shape for t in (out if isinstance(out, tuple) else (out,))]
    assert shapes == [t.shape for t in (expected if isinstance(expected, tuple) else (expected,))]


def saved_bytes(module: nn.Module, x: torch.Tensor, **tensors: torch.Tensor) -> int:
    with SavedTensors([*module.parameters(), *module.buffers()]).recording() as saved:
        module(x, **tensors)
    return saved.total


ATTENDING = [name for name in GIVEN if not name.startswith(("LSTM", "GRU", "RNN"))]


@pytest.mark.parametrize("name", ATTENDING)
def test_saved_for_backward_on_meta_is_what_the_cpu_saves(name: str) -> None:
    """What the memory estimate counts (saved-for-backward bytes on meta, attention as the CPU runs
    it) equals a real CPU run of the layer given its tensor arguments (memory, key, masks)."""
    sample = {**SAMPLES, **VARIANTS}[name]
    spec = spec_of(sample.spec).infer(tuple(sample.input_shape))
    real = tensor_args(sample)
    module = spec.build().train()
    cpu = saved_bytes(module, torch.randn(sample.input_shape), **real)
    with torch.device("meta"):
        meta_module = spec.build().train()
    tensors = {k: torch.empty(t.shape, dtype=t.dtype, device="meta") for k, t in real.items()}
    with device_attention(meta_module, "cpu"):
        meta = saved_bytes(meta_module, torch.empty(sample.input_shape, device="meta"), **tensors)
    assert meta == cpu > 0


@pytest.mark.parametrize("name", ["LSTM/state_h0_c0", "GRU/state_h0", "RNN/state"])
def test_the_memory_stand_in_of_a_recurrent_layer_returns_its_state(name: str) -> None:
    """In the memory passes a recurrent layer is replaced by a measured stand-in: with its state
    returned, the stand-in's outputs have the real layer's shapes, and backward runs through them."""
    sample = VARIANTS[name]
    ours, _ = built_pair(sample)
    real = tensor_args(sample)
    with torch.no_grad():
        expected = ours(torch.randn(sample.input_shape), **real)
    spec = spec_of(sample.spec).infer(tuple(sample.input_shape))
    with torch.device("meta"):
        module = spec.build()
    x = torch.empty(sample.input_shape, device="meta", requires_grad=True)
    tensors = {k: torch.empty(t.shape, device="meta") for k, t in real.items()}
    with _recurrent_measured(module) as (notes, _):
        out = module(x, **tensors)
        assert [t.shape for t in out] == [t.shape for t in expected]
        sum(t.sum() for t in out).backward()
    assert x.grad is not None and x.grad.shape == x.shape and notes


def test_a_causal_decoder_given_memory_and_masks_exports_to_onnx() -> None:
    """What a graph's ONNX export does with the node: its tensor arguments become named inputs, and
    onnxruntime computes what torch does (the exporter's settings: dynamo, the service's opset)."""
    import onnxruntime as ort

    sample = VARIANTS["TransformerDecoderLayer/causal_masks"]
    model, _ = built_pair(sample)
    x, tensors = torch.randn(sample.input_shape), tensor_args(sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on skipped constant folding
        program = torch.onnx.export(model, (x,), kwargs=tensors, dynamo=True, opset_version=OPSET)
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    assert [i.name for i in session.get_inputs()] == ["x", *tensors]
    feed = {"x": x.numpy(), **{name: t.numpy() for name, t in tensors.items()}}
    with torch.no_grad():
        expected = model(x, **tensors)
    torch.testing.assert_close(torch.from_numpy(session.run(None, feed)[0]), expected)


def test_an_lstm_takes_h0_and_c0_together() -> None:
    spec = spec_of({"type": "LSTM", "hidden_size": 4})
    spec.check_tensor_args(("h0", "c0"))
    spec.check_tensor_args(())
    with pytest.raises(ShapeError, match="`h0` is given but `c0` is not"):
        spec.check_tensor_args(("h0",))


def test_the_layers_declare_their_tensor_arguments_as_their_modules_take_them() -> None:
    """Every declared tensor argument is a keyword of the built module's forward (the graph passes
    them by name), and a required one has no default."""
    for name, cls in LAYER_SPECS.items():
        if not cls.tensor_args:
            continue
        sample = SAMPLES[name]
        with torch.device("meta"):
            module = spec_of(sample.spec).infer(tuple(sample.input_shape)).build()
        params = inspect.signature(module.forward).parameters
        assert set(cls.tensor_args) <= set(params), (name, set(cls.tensor_args) - set(params))
        assert set(cls.required_tensor_args) <= set(cls.tensor_args)
        for arg in cls.tensor_args:
            assert (params[arg].default is inspect.Parameter.empty) == (arg in cls.required_tensor_args)


SEQUENCE_REFUSALS = {
    "decoder_needs_memory": (
        {"type": "TransformerDecoderLayer", "nhead": 2, "dim_feedforward": 8},
        [2, 5, 8],
        "TransformerDecoderLayer needs `memory` (a graph node's tensor argument)",
    ),
    "lstm_returns_its_state": (
        {"type": "LSTM", "hidden_size": 4, "output": "sequence_and_state"},
        [2, 5, 8],
        "it returns 3 tensors (output, h_n, c_n), and a layer sequence passes on one; use it as a "
        "node of a graph, whose outputs are 'name.0' to 'name.2'",
    ),
    "gru_in_a_repeat": (
        {
            "type": "Repeat",
            "times": 2,
            "layers": [{"type": "GRU", "hidden_size": 8, "output": "sequence_and_state"}],
        },
        [2, 5, 8],
        "it returns 2 tensors (output, h_n)",
    ),
}


@pytest.mark.parametrize("name", sorted(SEQUENCE_REFUSALS))
def test_a_sequence_refuses_what_only_a_graph_can_give(client, name: str) -> None:
    layer, shape, message = SEQUENCE_REFUSALS[name]
    body = {"model": {"layers": [{"type": "Linear", "out_features": 8}, layer]}, "input_shape": shape}
    response = client.post("/v1/models/summary", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    loc = ["body", "model", "layers", 1] + (["layers", 0] if layer["type"] == "Repeat" else [])
    assert error["loc"] == loc, error
    assert message in error["msg"], error["msg"]


def test_the_catalog_says_what_a_node_is_wired_to(client) -> None:
    data = client.get("/v1/layers").json()["data"]
    entries = {entry["type"]: entry for entry in data if not entry["graph_only"]}  # the layer types
    decoder = entries["TransformerDecoderLayer"]
    assert decoder["category"] == "attention" and decoder["required_tensor_args"] == ["memory"]
    assert decoder["tensor_args"][0] == "memory" and "memory_key_padding_mask" in decoder["tensor_args"]
    assert entries["MultiheadAttention"]["tensor_args"] == ["key", "value", "key_padding_mask", "attn_mask"]
    assert entries["LSTM"]["tensor_args"] == ["h0", "c0"] and entries["Linear"]["tensor_args"] == []
    for name, entry in entries.items():
        assert entry["tensor_args"] == list(LAYER_SPECS[name].tensor_args), name
