"""RAM and RAM++ (recognize-anything) in MindSpore: Swin encoder + Query2Label tagging head.

Parameter names mirror the reference state dict (``visual_encoder.*``, ``label_embed``,
``reweight_scale``, ``image_proj``, ``wordvec_proj``, ``tagging_head.encoder.layer.N.*``, ``fc``;
RAM's optional ``tag_encoder``/``text_decoder``), so conversion is nearly the identity.

``model(pixel_values[, label_embed])`` returns the (N, K) tag logits in every mode (docs/ram.md#inference):
- RAM:   queries = ReLU(wordvec_proj(label_embed)) for every image;
- RAM++: the projected pooled token c/‖c‖ weights each tag's D description embeddings with
  softmax(exp(reweight_scale)·c·eᵀ) over D; queries = ReLU(wordvec_proj(weighted sum));
then the 2-layer cross-attention-only BERT attends to all projected image tokens and ``fc`` gives
one logit per tag. :class:`RAMTaggingHead` is the same head alone, fed with image embeddings.
"""
import contextlib
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ...errors import ConfigError
from ...layers import Linear, Permute
from ...utils.arrays import l2_normalize
from ...utils.graph import run_in_graph_mode
from ...utils.random import constant_parameter, init_parameter, init_rng
from ..modeling_utils import PreTrainedModel
from ..swin import SwinTransformer, swin_layer_id, swin_num_layer_ids
from . import openset, tags
from .bert import BertLMHeadModel, BertModel
from .configuration import FAMILY, RAMConfig
from .image_processing import RAMImageProcessor


def _unit_rows(shape, rng):
    return l2_normalize(rng.standard_normal(shape, dtype=np.float32))


class TaggingHeadMixin:
    """Builds and runs the tagging head on a Cell (shared by :class:`RAMTaggingHead` and the models)."""

    flat_checkpoint_parameters = ("label_embed",)   # RAM++: (K, D, E) held, (K*D, E) in checkpoints

    def _build_head(self, config):
        head, width = config.head_config, config.label_embed_dim
        self.is_plus = config.model_type == "ram_plus"
        self.num_tags, self.descriptions_per_tag = config.num_tags, config.descriptions_per_tag
        # the reference initialises label_embed with zeros (the checkpoint fills it); random unit rows
        # keep a randomly initialised model from giving every tag the same score. Frozen, as in the
        # reference training scripts (CLIP text embeddings).
        # RAM++ holds its K*D description rows as (K, D, E) (checkpoints: (K*D, E), see flat_checkpoint_parameters):
        # the head reads them with batched GEMMs and never reshapes them (a graph reshape copies all 457 MiB)
        shape = (config.num_tags, config.descriptions_per_tag, width) if self.is_plus else (config.num_tags, width)
        rng = init_rng()
        self.label_embed = init_parameter(shape, lambda: _unit_rows(shape, rng), name="label_embed",
                                          requires_grad=False)
        if self.is_plus:
            # shape (1,), not 0-d as in torch: MindSpore's fused AdamWeightDecay kernel rejects 0-d parameters
            self.reweight_scale = constant_parameter((1,), config.reweight_scale_init, name="reweight_scale")
        self.image_proj = Linear(config.vision_width, width)
        self.has_wordvec_proj = head.hidden_size != width  # the reference uses nn.Identity when equal
        if self.has_wordvec_proj:
            self.wordvec_proj = Linear(width, head.hidden_size)
        self.tagging_head = BertModel(head, width, embeddings=False, self_attention=False)
        self.fc = Linear(head.hidden_size, 1)
        self.batch_matmul = ops.BatchMatMul()
        self.batch_matmul_nt = ops.BatchMatMul(transpose_b=True)   # a @ b.T without materialising b.T
        self.tags_second = Permute((1, 0, 2))                       # (K, B, E) -> (B, K, E)

    def default_label_embed(self):
        """The checkpoint's label embeddings: (K, D, E) for RAM++, (K, E) for RAM."""
        return self.label_embed

    def reweighted_label_embed(self, cls_token, label_embed):
        """RAM++: per image, the softmax(over D)-weighted sum of each tag's D embeddings → (B, K, E).

        Two batched GEMMs over the K tags read ``label_embed`` (K, D, E) in place: a 2-D GEMM would need its
        (K*D, E) reshape, which copies all of it on every call on CPU (and ``.T`` of that copies it again)."""
        num_tags = label_embed.shape[0]
        cls_token = cls_token / ops.sqrt((cls_token * cls_token).sum(axis=-1, keepdims=True))
        scaled = ops.exp(self.reweight_scale) * cls_token                                     # (B, E)
        queries = ops.broadcast_to(scaled[None], (num_tags,) + scaled.shape)                 # (K, B, E)
        weights = ops.softmax(self.batch_matmul_nt(queries, label_embed), axis=-1)           # (K, B, D)
        return self.tags_second(self.batch_matmul(weights, label_embed))                     # (B, K, E)

    def head_logits(self, image_embeds, label_embed=None):
        """(B, 1+L, vision_width) encoder tokens → (B, K) tag logits."""
        if label_embed is None:
            label_embed = self.default_label_embed()
        tokens = self.image_proj(image_embeds)
        if self.is_plus:
            queries = self.reweighted_label_embed(tokens[:, 0, :], label_embed)
        else:
            queries = ops.broadcast_to(label_embed[None], (tokens.shape[0],) + label_embed.shape)
        if self.has_wordvec_proj:
            queries = self.wordvec_proj(queries)
        hidden = self.tagging_head(ops.relu(queries), tokens)
        return self.fc(hidden).squeeze(-1)


class RAMTaggingHead(TaggingHeadMixin, nn.Cell):
    """The tagging head alone: ``head(image_embeds[, label_embed])`` → (B, K) logits."""

    def __init__(self, config):
        nn.Cell.__init__(self)
        self.config = config
        self._build_head(config)

    def construct(self, image_embeds, label_embed=None):
        return self.head_logits(image_embeds, label_embed)


class RAMBase(TaggingHeadMixin, PreTrainedModel):
    """Shared body of :class:`RAM` and :class:`RAMPlus`; see the module docstring."""

    config_class = RAMConfig
    family = FAMILY
    image_processor_class = RAMImageProcessor
    checkpoint_marker = "label_embed"
    model_type = None

    def __init__(self, config=None):
        config = RAMConfig(model_type=self.model_type) if config is None else config
        if isinstance(config, dict):
            config = RAMConfig.from_dict(config)
        if config.model_type != self.model_type:
            raise ConfigError(f"{type(self).__name__} needs model_type {self.model_type!r}, the config has "
                              f"{config.model_type!r} (use mindram.{'RAMPlus' if self.model_type == 'ram' else 'RAM'})")
        super().__init__(config)
        self.visual_encoder = SwinTransformer(config.swin_config)
        self._build_head(config)
        if config.caption_modules:
            self._build_caption_modules(config)
        self.clear_open_set_tags()

    def _build_caption_modules(self, config):
        """RAM's captioning-only tag_encoder/text_decoder; tag_encoder layers 0-1 reuse the head's weights."""
        caption, tag_encoder = config.caption_config, BertModel(config.caption_config, config.label_embed_dim)
        for head_layer, layer in zip(self.tagging_head.encoder.layer, tag_encoder.encoder.layer):
            cross, head_cross = layer.crossattention, head_layer.crossattention
            cross.self.query = head_cross.self.query
            cross.self.key = head_cross.self.key
            cross.self.value = head_cross.self.value
            cross.output = head_cross.output
            layer.intermediate.dense = head_layer.intermediate.dense
            layer.output = head_layer.output
        self.tag_encoder = tag_encoder
        self.text_decoder = BertLMHeadModel(caption, caption.hidden_size)
        self.tagging_head = self.tagging_head  # attach last: the shared parameters keep tagging_head.* names

    def construct(self, pixel_values, label_embed=None):
        return self.head_logits(self.visual_encoder(pixel_values), label_embed)

    # ---- layer-wise learning-rate decay (mindram.trainer.optim.layer_decay_adamw) ----
    @property
    def num_layer_ids(self):
        """L: the Swin encoder's layer ids (``models/swin/layer_ids.py``); everything after it shares the top one."""
        return swin_num_layer_ids(self.config.swin_config.depths)

    def layer_id(self, param_name):
        """Layer id in ``[0, num_layer_ids)`` of a parameter: the Swin rule in the encoder, L − 1 (full lr) for
        the final norm and everything after the encoder (image_proj, reweighting, wordvec_proj, head, fc)."""
        prefix = "visual_encoder."
        if param_name.startswith(prefix):
            return swin_layer_id(param_name[len(prefix):], self.config.swin_config.depths)
        return self.num_layer_ids - 1

    # ---- vocabulary, thresholds, open set ----
    def clear_open_set_tags(self):
        """Back to the closed-set vocabulary, thresholds, label embeddings and delete_tag_index of the config."""
        config = self.config
        try:
            self.tag_list = tags.read_tag_list(config.data_path(config.tag_list))
            self.tag_list_chinese = tags.read_tag_list(config.data_path(config.tag_list_chinese))
        except FileNotFoundError as e:
            raise ConfigError(f"RAMConfig: {e}") from e
        for name, names in (("tag_list", self.tag_list), ("tag_list_chinese", self.tag_list_chinese)):
            if len(names) != config.num_tags:
                raise ConfigError(f"RAMConfig.{name}: {config.data_path(getattr(config, name))} has {len(names)} "
                                  f"tags, expected num_tags={config.num_tags}")
        threshold_file = config.threshold_file and config.data_path(config.threshold_file)
        self.class_threshold = tags.read_thresholds(threshold_file, config.num_tags, config.threshold)
        self.open_set_label_embed = None
        self.delete_tag_index = list(config.delete_tag_index)

    def vocabulary(self):
        """A copy of the current vocabulary (:class:`~mindram.models.ram.tags.Vocabulary`)."""
        return tags.Vocabulary(list(self.tag_list), list(self.tag_list_chinese),
                               np.array(self.class_threshold, np.float32), self.open_set_label_embed,
                               tuple(self.delete_tag_index))

    def use_vocabulary(self, vocabulary):
        """Install ``vocabulary`` (from :meth:`vocabulary` or :meth:`open_set_vocabulary`) on this model."""
        self.tag_list, self.tag_list_chinese = list(vocabulary.names), list(vocabulary.names_chinese)
        self.class_threshold = np.array(vocabulary.thresholds, np.float32)
        self.open_set_label_embed = vocabulary.label_embed
        self.delete_tag_index = list(vocabulary.delete_tag_index)

    def open_set_vocabulary(self, tag_names, descriptions=None, threshold=0.5, tag_names_chinese=None,
                            clip_model=openset.DEFAULT_CLIP, cache=True):
        """The open-set vocabulary of ``tag_names`` (docs/ram.md#open-set), built without changing this model.

        ``tag_names``: a list of distinct non-empty names, or one comma-separated string (``"cat, dog"``).
        Every tag gets ``threshold`` (reference: 0.5). RAM++ encodes ``descriptions`` (``{tag: [strings]}``,
        a list of lists parallel to the tags, or the reference JSON list; default one ``'a photo of a <tag>.'``
        each); RAM encodes its 63 prompt templates. ``clip_model`` is a CLIP name or path (default
        ``clip_vit_b_16``, OpenAI weights) or a ``CLIPModel``. Chinese names default to the English ones.
        The closed set's ``delete_tag_index`` does not apply to open-set indices.
        """
        names = tags.parse_tag_names(tag_names)
        threshold = tags.check_threshold(threshold, "open-set threshold")
        names_cn = list(tag_names_chinese) if tag_names_chinese is not None else names
        if len(names_cn) != len(names):
            raise ConfigError(f"tag_names_chinese has {len(names_cn)} names for {len(names)} tags")
        embed = openset.build_label_embed(self.config.model_type, names, descriptions, clip_model, cache)
        if embed.shape[-1] != self.config.label_embed_dim:
            raise ConfigError(f"open-set embeddings are {embed.shape[-1]}-d, the model needs "
                              f"{self.config.label_embed_dim} (use a CLIP with that projection_dim)")
        return tags.Vocabulary(names, names_cn, np.full(len(names), threshold, np.float32),
                               Tensor(np.ascontiguousarray(embed, np.float32)), ())

    def set_open_set_tags(self, tag_names, descriptions=None, threshold=0.5, tag_names_chinese=None,
                          clip_model=openset.DEFAULT_CLIP, cache=True):
        """Replace this model's vocabulary by the open-set one of :meth:`open_set_vocabulary` (same arguments).

        ``clear_open_set_tags()`` restores the closed set; :meth:`open_set_tags` does both around a block.
        """
        self.use_vocabulary(self.open_set_vocabulary(tag_names, descriptions, threshold, tag_names_chinese,
                                                     clip_model, cache))

    @contextlib.contextmanager
    def open_set_tags(self, tag_names, **kwargs):
        """``with model.open_set_tags(["go-kart"], ...) as vocabulary:`` — the open set inside the block, the
        previous vocabulary restored after it (even on an exception). Arguments as :meth:`open_set_vocabulary`."""
        vocabulary = self.open_set_vocabulary(tag_names, **kwargs)
        saved = self.vocabulary()
        self.use_vocabulary(vocabulary)
        try:
            yield vocabulary
        finally:
            self.use_vocabulary(saved)

    # ---- inference ----
    def check_image_size(self, size):
        """Raise ``ValueError`` unless the encoder runs size × size images: any positive multiple of the Swin
        patch size; the weights were trained at the configured ``image_size`` (docs/ram.md#input-resolution)."""
        self.config.swin_config.check_input_size(size)

    def get_tag_logits(self, pixel_values, label_embed=None):
        """(N, 3, S, S) images (array/Tensor, or inputs of ``image_processor``) → (N, K) logits as numpy.

        ``label_embed``: the tags' embeddings (a vocabulary's ``label_embed``); default the current vocabulary's.
        """
        if not isinstance(pixel_values, (np.ndarray, Tensor)):
            pixel_values = self.image_processor(pixel_values)
        pixels = pixel_values.astype(ms.float32) if isinstance(pixel_values, Tensor) else \
            Tensor(np.asarray(pixel_values, np.float32))
        label_embed = self.open_set_label_embed if label_embed is None else label_embed
        args = (pixels,) if label_embed is None else (pixels, label_embed)
        return run_in_graph_mode(self, *args).asnumpy()

    def get_tag_scores(self, pixel_values, label_embed=None):
        """(N, K) sigmoid tag scores (float32 numpy) of the current vocabulary (or of ``label_embed``)."""
        return ops.sigmoid(Tensor(self.get_tag_logits(pixel_values, label_embed))).asnumpy()

    def select_tags(self, scores, threshold=None):
        """Per image: ascending tag indices with score > threshold (per-tag default), minus delete_tag_index.

        ``threshold``: None, a number in [0, 1], or one value in [0, 1] per tag.
        """
        return self.vocabulary().select(scores, threshold)

    def generate_tag(self, pixel_values, threshold=None):
        """(English, Chinese) lists of ' | '-joined tags per image, in tag-index order (reference rule '>')."""
        vocabulary = self.vocabulary()
        thresholds = tags.resolve_thresholds(threshold, vocabulary.thresholds, len(vocabulary.names))  # checked first
        selected = tags.select_tags(self.get_tag_scores(pixel_values), thresholds, vocabulary.delete_tag_index)
        return ([tags.join_tags(vocabulary.names, idx) for idx in selected],
                [tags.join_tags(vocabulary.names_chinese, idx) for idx in selected])

    def generate_caption(self, pixel_values, tags=None, num_beams=3, max_length=30, min_length=10,
                         repetition_penalty=1.0, tokenizer=None):
        """``(captions, tags_used)``: tag-guided captions (RAM with caption modules; docs/ram.md#captioning).

        ``tags``: None (the model's own tags, as :meth:`generate_tag`) or per image a tag text or a list of
        names. ``num_beams`` 1 is greedy; lengths count the 4-token prompt. ``tokenizer``: default
        bert-base-uncased + [DEC]/[ENC] (``BertTokenizer.from_pretrained()``).
        """
        from .captioning import generate_caption
        return generate_caption(self, pixel_values, tags, num_beams, max_length, min_length, repetition_penalty,
                                tokenizer)

    @classmethod
    def config_from_state_dict(cls, params, source="state dict"):
        from .convert import config_from_state_dict
        return config_from_state_dict(params, source=source)


class RAM(RAMBase):
    """Recognize Anything Model: one CLIP text embedding per tag (``ram_swin_l_384``, ``ram_swin_b_384``)."""

    model_type = "ram"


class RAMPlus(RAMBase):
    """RAM++: image-weighted description embeddings per tag (``ram_plus_swin_l_384``, ``ram_plus_swin_b_384``)."""

    model_type = "ram_plus"


MODEL_CLASSES = {cls.model_type: cls for cls in (RAM, RAMPlus)}


def model_class_for(name_or_path_or_config):
    """:class:`RAM` or :class:`RAMPlus` for a :class:`RAMConfig` (or a mapping of its fields), a RAM name
    (``ram_swin_l_384``, ``ram_plus_swin_l_384``), a directory (``config.yaml``), or a checkpoint file (its
    ``<stem>.yaml`` sidecar, else ``ram_plus`` in the file name)."""
    spec = name_or_path_or_config
    if isinstance(spec, dict):
        spec = RAMConfig.from_dict(spec)
    if isinstance(spec, RAMConfig):
        return MODEL_CLASSES[spec.model_type]
    path = Path(str(spec)).expanduser()
    if path.is_file():
        sidecar = path.with_suffix(".yaml")
        if sidecar.is_file():
            return MODEL_CLASSES[RAMConfig.from_yaml(sidecar).model_type]
        return RAMPlus if "ram_plus" in path.name else RAM
    return MODEL_CLASSES[RAMConfig.from_pretrained(str(spec)).model_type]
