"""Ready-made specs: Swagger UI's "Try it out" examples, the playground's presets, and tests."""

from __future__ import annotations

SEED_MODEL = {
    "layers": [
        {"type": "MyConv2d", "in_channels": 3, "out_channels": 6, "kernel_size": 3},
        {"type": "ReLU"},
        {"type": "Flatten"},
        {"type": "MyLinear", "out_features": 10},
    ]
}

SMALL_CNN = {
    "layers": [
        {"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "BatchNorm2d"},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Residual", "layers": [{"type": "ConvBlock", "out_channels": 16}]},
        {"type": "AdaptiveAvgPool2d", "output_size": 1},
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 10},
    ]
}

# LeNet-5's shape scaled to the 8x8 digits (the training dataset): 8x8 -> 4x4 -> 2x2 -> 10 classes.
LENET_DIGITS = {
    "layers": [
        {"type": "Conv2d", "out_channels": 6, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 120},
        {"type": "ReLU"},
        {"type": "Linear", "out_features": 84},
        {"type": "ReLU"},
        {"type": "Linear", "out_features": 10},
    ]
}

LSTM_CLASSIFIER = {
    "layers": [
        {"type": "Embedding", "num_embeddings": 1000, "embedding_dim": 64},
        {"type": "LSTM", "hidden_size": 128, "num_layers": 2, "output": "last"},
        {"type": "Linear", "out_features": 2},
    ]
}

# ViT-B/16 as torchvision writes it (vision_transformer.py): 86,567,656 parameters.
VIT_B_16 = {
    "layers": [
        {"type": "Conv2d", "out_channels": 768, "kernel_size": 16, "stride": 16},  # 16x16 patches
        {"type": "Flatten", "start_dim": 2},  # [B, 768, 196]
        {"type": "Transpose", "dim0": 1, "dim1": 2},  # [B, 196, 768]: one token per patch
        {"type": "ClassToken"},  # [B, 197, 768]
        {"type": "PositionalEmbedding", "num_positions": 197},
        {
            "type": "Repeat",
            "times": 12,
            "layers": [
                {
                    "type": "TransformerEncoderLayer",
                    "nhead": 12,
                    "dim_feedforward": 3072,
                    "dropout": 0.0,
                    "activation": "gelu",
                    "layer_norm_eps": 1e-6,
                    "norm_first": True,
                }
            ],
        },
        {"type": "LayerNorm", "eps": 1e-6},
        {"type": "Select", "dim": 1, "index": 0},  # the class token: x[:, 0]
        {"type": "Linear", "out_features": 1000},
    ]
}

# GPT-2 small: 124,439,808 parameters, the LM head tied to the token embedding (one tensor).
GPT2_SMALL = {
    "layers": [
        {"type": "Embedding", "num_embeddings": 50257, "embedding_dim": 768, "name": "wte"},
        {"type": "PositionalEmbedding", "num_positions": 1024},
        {
            "type": "Repeat",
            "times": 12,
            "layers": [
                {
                    "type": "TransformerEncoderLayer",
                    "nhead": 12,
                    "dim_feedforward": 3072,
                    "dropout": 0.0,
                    "activation": "gelu_tanh",
                    "norm_first": True,
                    "causal": True,
                }
            ],
        },
        {"type": "LayerNorm"},
        {"type": "Linear", "out_features": 50257, "bias": False, "tie_weight": "wte"},
    ]
}

# A small Llama, TinyLlama-1.1B's shape: grouped-query attention (32 query heads, 4 key/value
# heads) with rotary positions, SwiGLU, RMSNorm; 1,100,048,384 parameters.
TINY_LLAMA = {
    "layers": [
        {"type": "Embedding", "num_embeddings": 32000, "embedding_dim": 2048},
        {
            "type": "Repeat",
            "times": 22,
            "layers": [
                {
                    "type": "Residual",
                    "layers": [
                        {"type": "RMSNorm", "eps": 1e-5},
                        {"type": "CausalSelfAttention", "num_heads": 32, "num_kv_heads": 4, "rope": True},
                    ],
                },
                {
                    "type": "Residual",
                    "layers": [{"type": "RMSNorm", "eps": 1e-5}, {"type": "SwiGLU", "hidden_features": 5632}],
                },
            ],
        },
        {"type": "RMSNorm", "eps": 1e-5},
        {"type": "Linear", "out_features": 32000, "bias": False},
    ]
}

# Graphs (issue 18), small enough to summarise at once. BERT-style: token, token-type and position
# embeddings, a padding mask passed to each encoder layer, the pooler on the first token; d 64.
ENCODER_LAYER_64 = {"type": "TransformerEncoderLayer", "d_model": 64, "nhead": 4, "dim_feedforward": 128}
BERT_SMALL_GRAPH = {
    "inputs": {
        "tokens": {"shape": [2, 16], "dtype": "int64"},
        "types": {"shape": [2, 16], "dtype": "int64"},
        "mask": {"shape": [2, 16], "dtype": "bool"},
    },
    "nodes": [
        {"name": "tok", "type": "Embedding", "num_embeddings": 1000, "embedding_dim": 64, "input": "tokens"},
        {"name": "typ", "type": "Embedding", "num_embeddings": 2, "embedding_dim": 64, "input": "types"},
        {"name": "emb", "type": "Add", "inputs": ["tok", "typ"]},
        {"name": "pos", "type": "PositionalEmbedding", "num_positions": 16, "input": "emb"},
        {"name": "norm", "type": "LayerNorm", "input": "pos"},
        {
            "name": "enc",
            "type": "Repeat",
            "times": 2,
            "input": "norm",
            "src_key_padding_mask": "mask",
            "layers": [
                {"type": "TransformerEncoderLayer", "d_model": 64, "nhead": 4, "dim_feedforward": 128}
            ],
        },
        {"name": "cls", "type": "Select", "dim": 1, "index": 0, "input": "enc"},
        {"name": "pool", "type": "Linear", "out_features": 64, "input": "cls"},
        {"name": "pooled", "type": "Tanh", "input": "pool"},
    ],
    "outputs": {"hidden": "enc", "pooled": "pooled"},
}

# Encoder-decoder, as nn.Transformer: the causal decoder layers read the encoder's output as `memory`.
ENCODER_DECODER_GRAPH = {
    "inputs": {"src": {"shape": [2, 10], "dtype": "int64"}, "tgt": {"shape": [2, 12], "dtype": "int64"}},
    "nodes": [
        {"name": "src_emb", "type": "Embedding", "num_embeddings": 1000, "embedding_dim": 64, "input": "src"},
        {"name": "tgt_emb", "type": "Embedding", "num_embeddings": 1000, "embedding_dim": 64, "input": "tgt"},
        {
            "name": "encoder",
            "type": "Repeat",
            "times": 2,
            "input": "src_emb",
            "layers": [
                {"type": "TransformerEncoderLayer", "d_model": 64, "nhead": 4, "dim_feedforward": 128}
            ],
        },
        {"name": "enc_norm", "type": "LayerNorm", "input": "encoder"},
        {
            "name": "decoder",
            "type": "Repeat",
            "times": 2,
            "input": "tgt_emb",
            "memory": "enc_norm",
            "layers": [
                {
                    "type": "TransformerDecoderLayer",
                    "d_model": 64,
                    "nhead": 4,
                    "dim_feedforward": 128,
                    "causal": True,
                }
            ],
        },
        {"name": "dec_norm", "type": "LayerNorm", "input": "decoder"},
        {"name": "head", "type": "Linear", "out_features": 1000, "input": "dec_norm"},
    ],
    "outputs": {"logits": "head"},
}

# A small CNN for the 8x8 digits: about 0.95 validation accuracy after 5 epochs.
DIGITS_CNN = {
    "layers": [
        {"type": "Conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 10},
    ]
}

# The smallest useful model for the digits: trains in a second, for tests of the job machinery.
DIGITS_MLP = {
    "layers": [
        {"type": "Flatten"},
        {"type": "Linear", "out_features": 32},
        {"type": "ReLU"},
        {"type": "Linear", "out_features": 10},
    ]
}


def digits_job(model: dict = DIGITS_CNN, **overrides: object) -> dict:
    """A training-job body on the digits dataset; any field may be overridden."""
    return {
        "model": model,
        "dataset": {"name": "digits"},
        "loss": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "Adam", "lr": 0.003},
        "epochs": 5,
        "batch_size": 64,
        "seed": 0,
        "device": "auto",
        **overrides,
    }


JOB_EXAMPLES = {
    "digits_cnn": {"summary": "A small CNN on the 8x8 digits (~0.95 accuracy)", "value": digits_job()}
}

SUMMARY_EXAMPLES = {
    "seed": {
        "summary": "The tutorial's MyConv2d and MyLinear",
        "value": {"model": SEED_MODEL, "input_shape": [2, 3, 8, 8]},
    },
    "small_cnn": {
        "summary": "A small CNN with a residual block (8x8 digits)",
        "value": {"model": SMALL_CNN, "input_shape": [64, 1, 8, 8]},
    },
    "lenet_digits": {
        "summary": "A LeNet-style CNN for the 8x8 digits dataset",
        "value": {"model": LENET_DIGITS, "input_shape": [64, 1, 8, 8]},
    },
    "lstm": {
        "summary": "An LSTM classifier over token ids",
        "value": {"model": LSTM_CLASSIFIER, "input_shape": [8, 32], "input_dtype": "int64"},
    },
    "vit_b_16": {
        "summary": "ViT-B/16 (86.6M parameters, as torchvision's vit_b_16)",
        "value": {"model": VIT_B_16, "input_shape": [1, 3, 224, 224]},
    },
    "gpt2_small": {
        "summary": "GPT-2 small (124M parameters, tied LM head, causal)",
        "value": {"model": GPT2_SMALL, "input_shape": [1, 1024], "input_dtype": "int64"},
    },
    "tiny_llama": {
        "summary": "A small Llama: TinyLlama-1.1B's shape (RoPE, grouped-query attention, SwiGLU)",
        "value": {"model": TINY_LLAMA, "input_shape": [1, 2048], "input_dtype": "int64"},
    },
    "bert_small_graph": {
        "summary": "Graph: BERT-style (tokens, types, mask; 2 layers, d 64)",
        "value": {"model": BERT_SMALL_GRAPH},
    },
    "encoder_decoder_graph": {
        "summary": "Graph: encoder-decoder (src, tgt; decoder layers with memory)",
        "value": {"model": ENCODER_DECODER_GRAPH},
    },
}

SUMMARY_EXAMPLES["small_cnn_training"] = {
    "summary": "The small CNN with its training memory under Adam",
    "value": {
        "model": SMALL_CNN,
        "input_shape": [64, 1, 8, 8],
        "training": {"optimizer": {"type": "Adam", "lr": 0.001}, "device": "cuda"},
    },
}

FIT_EXAMPLES = {
    "small_cnn_1gib": {
        "summary": "Does the small CNN train on a 1 GiB device, and at what batch at most?",
        "value": {
            "model": SMALL_CNN,
            "input_shape": [64, 1, 8, 8],
            "optimizer": {"type": "Adam", "lr": 0.001},
            "device": "cuda",
            "device_memory_bytes": 1 << 30,
        },
    }
}
