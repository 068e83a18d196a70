// The graph presets: small enough to summarize at once, shaped like the models of issue 18.

/** BERT-style: token, token-type and position embeddings, a padding mask passed to each of the
 * encoder layers, and the pooler on the first token. 2 layers, d 64. */
const BERT_SMALL = {
  inputs: {
    tokens: { shape: [2, 16], dtype: "int64" },
    types: { shape: [2, 16], dtype: "int64" },
    mask: { shape: [2, 16], dtype: "bool" },
  },
  nodes: [
    { name: "tok", type: "Embedding", num_embeddings: 1000, embedding_dim: 64, input: "tokens" },
    { name: "typ", type: "Embedding", num_embeddings: 2, embedding_dim: 64, input: "types" },
    { name: "emb", type: "Add", inputs: ["tok", "typ"] },
    { name: "pos", type: "PositionalEmbedding", num_positions: 16, input: "emb" },
    { name: "norm", type: "LayerNorm", input: "pos" },
    {
      name: "enc", type: "Repeat", times: 2, input: "norm", src_key_padding_mask: "mask",
      layers: [{ type: "TransformerEncoderLayer", d_model: 64, nhead: 4, dim_feedforward: 128 }],
    },
    { name: "cls", type: "Select", dim: 1, index: 0, input: "enc" },
    { name: "pool", type: "Linear", out_features: 64, input: "cls" },
    { name: "pooled", type: "Tanh", input: "pool" },
  ],
  outputs: { hidden: "enc", pooled: "pooled" },
};

/** Encoder-decoder, as nn.Transformer: the decoder layers read the encoder's output as `memory`. */
const ENCODER_DECODER = {
  inputs: {
    src: { shape: [2, 10], dtype: "int64" },
    tgt: { shape: [2, 12], dtype: "int64" },
  },
  nodes: [
    { name: "src_emb", type: "Embedding", num_embeddings: 1000, embedding_dim: 64, input: "src" },
    { name: "tgt_emb", type: "Embedding", num_embeddings: 1000, embedding_dim: 64, input: "tgt" },
    {
      name: "encoder", type: "Repeat", times: 2, input: "src_emb",
      layers: [{ type: "TransformerEncoderLayer", d_model: 64, nhead: 4, dim_feedforward: 128 }],
    },
    { name: "enc_norm", type: "LayerNorm", input: "encoder" },
    {
      name: "decoder", type: "Repeat", times: 2, input: "tgt_emb", memory: "enc_norm",
      layers: [{ type: "TransformerDecoderLayer", d_model: 64, nhead: 4, dim_feedforward: 128, causal: true }],
    },
    { name: "dec_norm", type: "LayerNorm", input: "decoder" },
    { name: "head", type: "Linear", out_features: 1000, input: "dec_norm" },
  ],
  outputs: { logits: "head" },
};

/** Presets in the form of the summary endpoint's OpenAPI examples: name -> {summary, value}. */
export const GRAPH_PRESETS = {
  bert_small_graph: {
    summary: "Graph: BERT-style (tokens, types, mask; 2 layers, d 64)",
    value: { model: BERT_SMALL },
  },
  encoder_decoder_graph: {
    summary: "Graph: encoder-decoder (src, tgt; decoder layers with memory)",
    value: { model: ENCODER_DECODER },
  },
};
