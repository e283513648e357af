"""CLIP (OpenAI / open_clip ViT towers) in MindSpore.

Parameter names mirror open_clip: the vision tower under ``visual.*`` exactly as open_clip and
OpenAI name it; the text tower under ``text.*`` (open_clip's ``CustomTextCLIP`` layout — the
classic CLIP keys ``token_embedding``, ``positional_embedding``, ``transformer``, ``ln_final``,
``text_projection`` simply gain the ``text.`` prefix); ``logit_scale`` at the top.

``construct(pixel_values, input_ids)`` returns ``(logits_per_image, logits_per_text)`` in every
mode; losses live in :mod:`mindram.losses`.
"""
import numpy as np
import mindspore as ms
from ...utils.random import constant_parameter, init_rng, normal_parameter
from mindspore import Tensor, nn, ops

from ...layers import BroadcastAdd, Embedding, LayerNorm, PatchEmbed, Transformer
from ...utils.batching import micro_batches
from ...utils.graph import run_in_graph_mode
from ..modeling_utils import PreTrainedModel
from .configuration import CLIPConfig
from .image_processing import CLIPImageProcessor
from .tokenizer import CLIPTokenizer

_DTYPES = {"float32": ms.float32, "float16": ms.float16}


def l2_normalize(x, eps=1e-12):
    """x / max(||x||, eps) over the last axis (torch ``F.normalize``)."""
    norm = ops.sqrt((x * x).sum(axis=-1, keepdims=True))
    return x / ops.maximum(norm, eps)


class VisionTransformer(nn.Cell):
    """Patch embedding + class token + positions → ln_pre → transformer → ln_post(token 0) @ proj."""

    def __init__(self, config, output_dim, compute_dtype=ms.float32):
        super().__init__()
        width, self.compute_dtype = config.hidden_size, compute_dtype
        rng = init_rng()
        scale = width ** -0.5
        self.conv1 = PatchEmbed(config.num_channels, width, config.patch_size, bias=False)
        self.class_embedding = normal_parameter((width,), scale, rng)
        self.positional_embedding = normal_parameter((config.num_tokens, width), scale, rng)
        self.ln_pre = LayerNorm(width, config.layer_norm_eps)
        self.transformer = Transformer(width, config.num_hidden_layers, config.num_attention_heads,
                                       config.intermediate_size, config.hidden_act, config.layer_norm_eps)
        self.ln_post = LayerNorm(width, config.layer_norm_eps)
        self.proj = normal_parameter((width, output_dim), scale, rng)
        self.add_positions = BroadcastAdd(in_training=False)

    def construct(self, pixel_values):
        x = self.conv1(pixel_values.astype(self.compute_dtype))
        batch, _, width = x.shape
        cls = ops.broadcast_to(self.class_embedding.astype(x.dtype).reshape(1, 1, width), (batch, 1, width))
        x = self.add_positions(ops.concat((cls, x), axis=1), self.positional_embedding.astype(x.dtype))
        x = self.transformer(self.ln_pre(x))
        pooled = self.ln_post(x[:, 0, :])
        return ops.matmul(pooled, self.proj.astype(pooled.dtype)).astype(ms.float32)


class TextTransformer(nn.Cell):
    """Token + position embeddings → causal transformer → ln_final at the EOT token @ projection."""

    def __init__(self, config, output_dim, compute_dtype=ms.float32):
        super().__init__()
        width, context = config.hidden_size, config.max_position_embeddings
        self.compute_dtype = compute_dtype
        rng = init_rng()
        self.token_embedding = Embedding(config.vocab_size, width, std=0.02)
        self.positional_embedding = normal_parameter((context, width), 0.01, rng)
        self.transformer = Transformer(width, config.num_hidden_layers, config.num_attention_heads,
                                       config.intermediate_size, config.hidden_act, config.layer_norm_eps, causal=True)
        self.ln_final = LayerNorm(width, config.layer_norm_eps)
        self.text_projection = normal_parameter((width, output_dim), width ** -0.5, rng)
        self.attn_mask = Tensor(np.triu(np.full((context, context), -np.inf, np.float32), 1))
        self.argmax = ops.Argmax(axis=-1, output_type=ms.int32)
        self.add_positions = BroadcastAdd(in_training=False)

    def construct(self, input_ids):
        input_ids = input_ids.astype(ms.int32)
        batch, length = input_ids.shape
        x = self.token_embedding(input_ids).astype(self.compute_dtype)
        x = self.add_positions(x, self.positional_embedding[:length].astype(x.dtype))
        x = self.transformer(x, self.attn_mask[:length, :length])
        # the EOT token has the largest id; layer norm is per token, so pool first
        eot = self.argmax(input_ids) + ops.arange(0, batch, dtype=ms.int32) * length
        pooled = self.ln_final(ops.gather(x.reshape(batch * length, -1), eot, 0))
        return ops.matmul(pooled, self.text_projection.astype(pooled.dtype)).astype(ms.float32)


class CLIPModel(PreTrainedModel):
    """Contrastive image-text model: ``model(pixel_values, input_ids)`` → (logits_per_image, logits_per_text).

    ``get_image_features``/``get_text_features`` return projected, *un-normalised* features and run as
    a compiled graph (see :mod:`mindram.utils.graph`); ``construct`` is graph- and PyNative-safe.
    ``model.image_processor`` is the preprocessing of its weights (its image size and the catalog's
    mean/std/resize mode for the name it was loaded as); ``model.tokenizer`` the shared CLIP tokenizer.
    """

    config_class = CLIPConfig
    family = "clip"
    image_processor_class = CLIPImageProcessor
    tokenizer_class = CLIPTokenizer
    checkpoint_marker = "visual.conv1.weight"

    def __init__(self, config=None):
        config = config if config is not None else CLIPConfig()
        if isinstance(config, dict):
            config = CLIPConfig.from_dict(config)
        super().__init__(config)
        dtype = _DTYPES[config.compute_dtype]
        self.visual = VisionTransformer(config.vision_config, config.projection_dim, dtype)
        self.text = TextTransformer(config.text_config, config.projection_dim, dtype)
        # shape (1,), not 0-d as in torch: MindSpore's fused AdamWeightDecay kernel rejects 0-d parameters
        self.logit_scale = constant_parameter((1,), config.logit_scale_init_value, name="logit_scale")

    @property
    def image_size(self):
        return self.config.vision_config.image_size

    @property
    def context_length(self):
        return self.config.text_config.max_position_embeddings

    def construct(self, pixel_values, input_ids):
        image = l2_normalize(self.visual(pixel_values))
        text = l2_normalize(self.text(input_ids))
        logits_per_image = ops.exp(self.logit_scale) * ops.matmul(image, text.T)
        return logits_per_image, logits_per_image.T

    def get_image_features(self, pixel_values):
        """(N, 3, S, S) float images → (N, D) projected image features (not normalised).

        A batch of more than ``vision_config.max_batch_tokens`` tokens runs as several calls (the same features).
        """
        pixel_values = _as_tensor(pixel_values, ms.float32)
        vision = self.config.vision_config
        chunks = micro_batches(pixel_values.shape[0], vision.num_tokens, vision.max_batch_tokens)
        if len(chunks) == 1:
            return run_in_graph_mode(self.visual, pixel_values)
        return ops.concat([run_in_graph_mode(self.visual, pixel_values[start:stop]) for start, stop in chunks])

    def get_text_features(self, input_ids):
        """(N, L) token ids → (N, D) projected text features (not normalised).

        With ``text_config.trim_padding`` (the default) the tower runs on the first :func:`text_length`
        positions only: the same features, since no position after a row's EOT token reaches it.
        """
        if self.config.text_config.trim_padding:
            ids = input_ids.asnumpy() if isinstance(input_ids, Tensor) else np.asarray(input_ids)
            if ids.ndim == 2 and ids.size:
                input_ids = np.ascontiguousarray(ids[:, :text_length(ids)])
        return run_in_graph_mode(self.text, _as_tensor(input_ids, ms.int32))

    @classmethod
    def config_from_state_dict(cls, params, source="state dict"):
        from .convert import config_from_state_dict
        return config_from_state_dict(params, source=source)


def text_length(input_ids, minimum=8):
    """Positions of ``input_ids`` (N, L) the text tower needs: up to the last EOT token of any row (the EOT has
    the largest id; the first largest, as the tower's argmax), rounded up to a power of two ≥ ``minimum`` so
    that a few graph shapes serve every batch; at most L."""
    needed = int(np.asarray(input_ids).argmax(axis=1).max()) + 1
    length = int(minimum)
    while length < needed:
        length *= 2
    return min(length, np.shape(input_ids)[1])


def _as_tensor(value, dtype):
    if isinstance(value, Tensor):
        return value.astype(dtype) if value.dtype != dtype else value
    return Tensor(np.asarray(value), dtype)
