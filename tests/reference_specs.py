"""Reference model specs, written as plain JSON-able dicts (no project imports): the golden
summaries (tests/golden/) are made from them."""

from __future__ import annotations


def conv_bn(out: int, k: int, stride: int = 1, relu: bool = True) -> list[dict]:
    conv = {"type": "Conv2d", "out_channels": out, "kernel_size": k, "stride": stride, "padding": k // 2}
    layers = [{**conv, "bias": False}, {"type": "BatchNorm2d"}]
    return [*layers, {"type": "ReLU"}] if relu else layers


def bottleneck(width: int, stride: int, project: bool) -> list[dict]:
    """torchvision's Bottleneck (v1.5), then the ReLU after the sum."""
    block: dict = {
        "type": "Residual",
        "layers": [*conv_bn(width, 1), *conv_bn(width, 3, stride), *conv_bn(4 * width, 1, relu=False)],
    }
    if project:
        block["shortcut"] = conv_bn(4 * width, 1, stride, relu=False)
    return [block, {"type": "ReLU"}]


def resnet50() -> dict:
    layers = [*conv_bn(64, 7, 2), {"type": "MaxPool2d", "kernel_size": 3, "stride": 2, "padding": 1}]
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
        for i in range(blocks):
            layers += bottleneck(width, 2 if stage and not i else 1, project=i == 0)
    layers += [{"type": "AdaptiveAvgPool2d", "output_size": 1}, {"type": "Flatten"}]
    return {"layers": [*layers, {"type": "Linear", "out_features": 1000}]}


def vit_b_16() -> dict:
    encoder = {"type": "TransformerEncoderLayer", "nhead": 12, "dim_feedforward": 3072}
    encoder |= {"activation": "gelu", "norm_first": True, "dropout": 0.0}
    return {
        "layers": [
            {"type": "Conv2d", "out_channels": 768, "kernel_size": 16, "stride": 16},
            {"type": "Flatten", "start_dim": 2},
            {"type": "Transpose", "dim0": 1, "dim1": 2},
            {"type": "ClassToken"},
            {"type": "PositionalEmbedding", "num_positions": 197},
            {"type": "Dropout", "p": 0.0},
            {"type": "Repeat", "times": 12, "layers": [encoder]},
            {"type": "LayerNorm", "eps": 1e-6},
            {"type": "Select", "dim": 1, "index": 0},
            {"type": "Linear", "out_features": 1000},
        ]
    }


def gpt2_small() -> dict:
    block = {"type": "TransformerEncoderLayer", "nhead": 12, "dim_feedforward": 3072, "causal": True}
    block |= {"activation": "gelu_tanh", "norm_first": True}
    return {
        "layers": [
            {"type": "Embedding", "num_embeddings": 50257, "embedding_dim": 768, "name": "wte"},
            {"type": "PositionalEmbedding", "num_positions": 1024},
            {"type": "Dropout", "p": 0.1},
            {"type": "Repeat", "times": 12, "layers": [block]},
            {"type": "LayerNorm"},
            {"type": "Linear", "out_features": 50257, "bias": False, "tie_weight": "wte"},
        ]
    }


def llama_2_7b() -> dict:
    norm = {"type": "RMSNorm", "eps": 1e-5}
    block = [
        {"type": "Residual", "layers": [norm, {"type": "CausalSelfAttention", "num_heads": 32}]},
        {"type": "Residual", "layers": [norm, {"type": "SwiGLU", "hidden_features": 11008}]},
    ]
    return {
        "layers": [
            {"type": "Embedding", "num_embeddings": 32000, "embedding_dim": 4096},
            {"type": "Repeat", "times": 32, "layers": block},
            {"type": "RMSNorm", "eps": 1e-5},
            {"type": "Linear", "out_features": 32000, "bias": False},
        ]
    }


LSTM = {
    "layers": [
        {"type": "Embedding", "num_embeddings": 1000, "embedding_dim": 32},
        {"type": "LSTM", "hidden_size": 48, "num_layers": 2, "bidirectional": True, "dropout": 0.1},
        {"type": "LayerNorm"},
        {"type": "LSTM", "hidden_size": 24, "output": "last"},
        {"type": "Linear", "out_features": 5},
    ]
}


def double_conv(out: int) -> list[dict]:
    return [*conv_bn(out, 3), *conv_bn(out, 3)]


def unet(widths: tuple[int, ...] = (16, 32, 64, 128), classes: int = 2) -> dict:
    """The U-Net of Ronneberger et al. (with BatchNorm, padded convs): each level's skip is the
    first branch of a Concat, the way down and up again its second."""

    def level(i: int) -> list[dict]:
        if i == len(widths) - 1:
            return double_conv(widths[i])
        down = [{"type": "MaxPool2d", "kernel_size": 2}, *level(i + 1)]
        up = {"type": "ConvTranspose2d", "out_channels": widths[i], "kernel_size": 2, "stride": 2}
        return [
            *double_conv(widths[i]),
            {"type": "Concat", "dim": 1, "branches": [[], [*down, up]]},
            *double_conv(widths[i]),
        ]

    return {"layers": [*level(0), {"type": "Conv2d", "out_channels": classes, "kernel_size": 1}]}


ADAM = {"optimizer": {"type": "Adam", "lr": 1e-3}, "device": "cpu"}
CASES: dict[str, dict] = {
    "resnet50": {"model": resnet50(), "input_shape": [2, 3, 224, 224]},
    "resnet50_training": {"model": resnet50(), "input_shape": [8, 3, 224, 224], "training": ADAM},
    "vit_b_16": {"model": vit_b_16(), "input_shape": [1, 3, 224, 224]},
    "gpt2_small_tied": {"model": gpt2_small(), "input_shape": [1, 1024], "input_dtype": "int64"},
    "llama_2_7b": {"model": llama_2_7b(), "input_shape": [1, 2048], "input_dtype": "int64"},
    "lstm": {"model": LSTM, "input_shape": [4, 20], "input_dtype": "int64"},
    "lstm_training": {"model": LSTM, "input_shape": [4, 20], "input_dtype": "int64", "training": ADAM},
    "unet": {"model": unet(), "input_shape": [1, 3, 64, 64]},
    "unet_training": {"model": unet(), "input_shape": [2, 3, 64, 64], "training": {**ADAM, "device": "cuda"}},
}
