"""BLIP-style BERT blocks of RAM (the reference's ``ram/models/bert.py``), with its parameter names.

- Tagging head (Query2Label): :class:`BertModel` without embeddings whose layers have only
  ``crossattention`` + feed-forward (the reference deletes ``embeddings`` and every ``attention``).
- RAM caption modules: ``tag_encoder`` (embeddings; self-attention + cross-attention to the image
  tokens) and ``text_decoder`` (:class:`BertLMHeadModel`, causal self-attention + cross-attention,
  LM head whose decoder weight is the word-embedding table and whose bias is ``cls.predictions.bias``).

Numerics follow the reference: scores = (q·kᵀ)/√head_dim (division after the product), additive
masks (1 − m)·(−10000), post-norm residual LayerNorms with the config's eps (1e-12), exact GELU.
Dropout is not modelled (the reference runs in eval mode). Cross-attention attends to every image
token (RAM's image masks are all ones).
"""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ...utils.random import constant_parameter
from ...layers import Embedding, LayerNorm, Linear, Permute, get_activation


class BertSelfAttention(nn.Cell):
    """``query`` from the hidden states; ``key``/``value`` from ``context`` (width ``kv_width``)."""

    def __init__(self, hidden_size, num_heads, kv_width):
        super().__init__()
        self.num_heads, self.head_dim = int(num_heads), int(hidden_size) // int(num_heads)
        self.query = Linear(hidden_size, hidden_size)
        self.key = Linear(kv_width, hidden_size)
        self.value = Linear(kv_width, hidden_size)
        self.norm_factor = math.sqrt(self.head_dim)
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.weighted_sum = ops.BatchMatMul()
        self.softmax = ops.Softmax(axis=-1)
        self.swap_heads = Permute((0, 2, 1, 3))   # (B, N, H, D) <-> (B, H, N, D)

    def _heads(self, x):
        batch, length, _ = x.shape
        return self.swap_heads(x.reshape(batch, length, self.num_heads, self.head_dim))

    def construct(self, hidden_states, context, mask=None):
        batch, length, width = hidden_states.shape
        q = self._heads(self.query(hidden_states))
        k = self._heads(self.key(context))
        v = self._heads(self.value(context))
        scores = self.scores(q, k) / self.norm_factor
        if mask is not None:
            scores = scores + mask
        out = self.weighted_sum(self.softmax(scores), v)
        return self.swap_heads(out).reshape(batch, length, width)


class BertResidualOutput(nn.Cell):
    """``LayerNorm(dense(x) + residual)`` — BERT's SelfOutput and Output."""

    def __init__(self, in_features, hidden_size, eps):
        super().__init__()
        self.dense = Linear(in_features, hidden_size)
        self.LayerNorm = LayerNorm(hidden_size, eps)

    def construct(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Cell):
    """``self`` (attention) + ``output`` (residual LayerNorm)."""

    def __init__(self, config, kv_width):
        super().__init__()
        self.self = BertSelfAttention(config.hidden_size, config.num_attention_heads, kv_width)
        self.output = BertResidualOutput(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def construct(self, hidden_states, context, mask=None):
        return self.output(self.self(hidden_states, context, mask), hidden_states)


class BertIntermediate(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.act = get_activation(config.hidden_act)

    def construct(self, x):
        return self.act(self.dense(x))


class BertLayer(nn.Cell):
    """[self-attention] → [cross-attention to ``context``] → feed-forward, each with a residual LayerNorm."""

    def __init__(self, config, kv_width, self_attention=True, cross_attention=True):
        super().__init__()
        self.has_self, self.has_cross = bool(self_attention), bool(cross_attention)
        if self.has_self:
            self.attention = BertAttention(config, config.hidden_size)
        if self.has_cross:
            self.crossattention = BertAttention(config, kv_width)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def construct(self, hidden_states, context=None, mask=None):
        if self.has_self:
            hidden_states = self.attention(hidden_states, hidden_states, mask)
        if self.has_cross:
            hidden_states = self.crossattention(hidden_states, context)
        return self.output(self.intermediate(hidden_states), hidden_states)


class BertEncoder(nn.Cell):
    def __init__(self, config, kv_width, self_attention=True, cross_attention=True):
        super().__init__()
        self.layer = nn.CellList([BertLayer(config, kv_width, self_attention, cross_attention)
                                  for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states, context=None, mask=None):
        for layer in self.layer:
            hidden_states = layer(hidden_states, context, mask)
        return hidden_states


class BertEmbeddings(nn.Cell):
    """word + absolute position embeddings → LayerNorm (``position_ids`` is recomputed, not stored)."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def construct(self, input_ids):
        positions = ops.arange(0, input_ids.shape[1], dtype=ms.int32)
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class BertModel(nn.Cell):
    """BERT stack; with ``embeddings`` it takes token ids (+ a 0/1 padding mask), else ready embeddings.

    ``construct(inputs, context, attention_mask=None)`` returns the last hidden states. The tagging
    head is ``BertModel(config, kv_width, embeddings=False, self_attention=False)``.
    """

    def __init__(self, config, kv_width, embeddings=True, self_attention=True, is_decoder=False):
        super().__init__()
        self.has_embeddings, self.is_decoder = bool(embeddings), bool(is_decoder)
        if self.has_embeddings:
            self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config, kv_width, self_attention)

    def extended_mask(self, attention_mask, length):
        """(B, L) 0/1 padding mask → additive (B, 1, L|1, L) mask, causal for a decoder."""
        mask = attention_mask.astype(ms.float32)[:, None, None, :]
        if self.is_decoder:
            causal = Tensor(np.tril(np.ones((length, length), np.float32)))
            mask = causal[None, None, :, :] * mask
        return (1.0 - mask) * -10000.0

    def construct(self, inputs, context=None, attention_mask=None):
        hidden_states = self.embeddings(inputs.astype(ms.int32)) if self.has_embeddings else inputs
        mask = None
        if self.has_embeddings:
            if attention_mask is None:
                attention_mask = ops.ones(inputs.shape, ms.float32)
            mask = self.extended_mask(attention_mask, inputs.shape[1])
        return self.encoder(hidden_states, context, mask)


class BertLMPredictionHead(nn.Cell):
    """``transform`` (dense → act → LayerNorm), then logits against the tied word embeddings + ``bias``."""

    def __init__(self, config):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.bias = constant_parameter((config.vocab_size,), 0.0, name="bias")
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, hidden_states, word_embeddings):
        h = self.transform(hidden_states)
        batch, length, width = h.shape
        logits = self.matmul(h.reshape(batch * length, width), word_embeddings) + self.bias
        return logits.reshape(batch, length, -1)


class BertPredictionHeadTransform(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.act = get_activation(config.hidden_act)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def construct(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class BertOnlyMLMHead(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def construct(self, hidden_states, word_embeddings):
        return self.predictions(hidden_states, word_embeddings)


class BertLMHeadModel(nn.Cell):
    """RAM's ``text_decoder``: causal ``bert`` cross-attending to ``context`` + LM head → (B, L, vocab) logits."""

    def __init__(self, config, kv_width):
        super().__init__()
        self.bert = BertModel(config, kv_width, is_decoder=True)
        self.cls = BertOnlyMLMHead(config)

    def construct(self, input_ids, context, attention_mask=None):
        hidden_states = self.bert(input_ids, context, attention_mask)
        return self.cls(hidden_states, self.bert.embeddings.word_embeddings.weight)
