"""recognize-anything RAM / RAM++ state dicts ↔ mindram names (pure functions, no torch), and the CLI.

:func:`convert_state_dict` (torch → mindram), in the order of the reference loader (docs/ram.md#conversion):
- ``visual_encoder.*``: :func:`mindram.models.swin.convert_swin_state_dict` (``mlp.fc1/fc2`` →
  ``mlp.c_fc/c_proj``; ``relative_position_index``/``attn_mask`` buffers dropped and recomputed);
- ``vision_multi.*`` (older checkpoints) → ``tagging_head.*``; ``reweight_scale`` 0-d → (1,);
- RAM aliases: ``tag_encoder.encoder.layer.{0,1}`` cross-attention/FFN weights ARE the tagging
  head's (tied in the reference), ``text_decoder.cls.predictions.decoder.{weight,bias}`` ARE the
  word embeddings / ``cls.predictions.bias``: dropped after checking they equal their owner;
- ``*.embeddings.position_ids`` buffers dropped; RAM's caption modules dropped unless
  ``config.caption_modules`` (inference never uses them);
- every other key is kept as is, and anything the model does not have is an error.
:func:`to_torch_state_dict` is the inverse (aliases re-emitted; buffers left to the reference model,
whose loader deletes them anyway).
"""
import logging
import re
from pathlib import Path

import numpy as np

from ... import catalog
from ...errors import CheckpointError
from ..swin import convert_swin_state_dict, is_swin_buffer, to_torch_swin_state_dict
from .configuration import FAMILY, RAMConfig

logger = logging.getLogger(__name__)
CAPTION_PREFIXES = ("tag_encoder.", "text_decoder.")
_TIED = re.compile(r"^tag_encoder\.encoder\.layer\.(\d+)\.((?:crossattention\.self\.(?:query|key|value)|"
                   r"crossattention\.output\.(?:dense|LayerNorm)|intermediate\.dense|output\.(?:dense|LayerNorm))"
                   r"\.(?:weight|bias))$")
_LM_TIES = {"text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
            "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias"}
CKPT_LIMIT = 1_900_000_000  # MindSpore .ckpt is one protobuf message (2 GB at most)


def alias_owner(key, head_layers):
    """The key whose tensor ``key`` shares in the reference (None if ``key`` owns its tensor)."""
    match = _TIED.match(key)
    if match and int(match.group(1)) < head_layers:
        return f"tagging_head.encoder.layer.{match.group(1)}.{match.group(2)}"
    return _LM_TIES.get(key)


def convert_state_dict(torch_sd, config):
    """``{torch name: array}`` → ``({mindram name: float32 array}, report)``; report lists what was dropped."""
    sd = {k.replace("vision_multi", "tagging_head"): v for k, v in torch_sd.items()}
    head_layers = config.head_config.num_hidden_layers
    params = convert_swin_state_dict(sd, prefix="visual_encoder.")
    report = {"buffers": [], "aliases": [], "caption_modules": []}
    for key, value in sd.items():
        if key.startswith("visual_encoder."):
            if is_swin_buffer(key):
                report["buffers"].append(key)
            continue
        owner = alias_owner(key, head_layers)
        if key.endswith("embeddings.position_ids"):
            report["buffers"].append(key)
        elif key.startswith(CAPTION_PREFIXES) and not config.caption_modules:
            report["caption_modules"].append(key)
        elif owner is not None:
            if owner in sd and not np.array_equal(np.asarray(sd[owner]), np.asarray(value)):
                logger.warning("%s differs from %s, which it is tied to; keeping %s (the reference loads it last)",
                               key, owner, owner)
            report["aliases"].append(key)
        else:
            array = np.asarray(value, dtype=np.float32)
            params[key] = array.reshape(1) if key == "reweight_scale" else array
    return params, report


def to_torch_state_dict(params, config):
    """Inverse of :func:`convert_state_dict`: reference names, 0-d ``reweight_scale``, aliases re-emitted."""
    out = to_torch_swin_state_dict(params, prefix="visual_encoder.")
    for key, value in params.items():
        if not key.startswith("visual_encoder."):
            out[key] = np.reshape(value, ()) if key == "reweight_scale" else value
    if config.caption_modules:
        for key in list(out):
            if key.startswith("tagging_head.encoder.layer."):
                tied = "tag_encoder." + key[len("tagging_head."):]
                if alias_owner(tied, config.head_config.num_hidden_layers) == key:
                    out[tied] = out[key]
        out.update({alias: out[owner] for alias, owner in _LM_TIES.items()})
    return out


def expected_shapes(config, swin_shapes):
    """``{name: shape}`` of every parameter of the model of ``config`` given its encoder's ``swin_shapes``
    (``{name: shape}`` of a ``SwinTransformer``, unprefixed), without building the model."""
    head, width, vision = config.head_config, config.label_embed_dim, config.vision_width
    shapes = {f"visual_encoder.{k}": tuple(v) for k, v in swin_shapes.items()}
    shapes.update({"label_embed": (config.num_tags * config.descriptions_per_tag, width),
                   "image_proj.weight": (width, vision), "image_proj.bias": (width,),
                   "fc.weight": (1, head.hidden_size), "fc.bias": (1,)})
    if config.model_type == "ram_plus":
        shapes["reweight_scale"] = (1,)
    if head.hidden_size != width:
        shapes.update({"wordvec_proj.weight": (head.hidden_size, width), "wordvec_proj.bias": (head.hidden_size,)})
    shapes.update(_bert_shapes("tagging_head.", head, width, embeddings=False, self_attention=False))
    if config.caption_modules:
        caption = config.caption_config
        tag_encoder = _bert_shapes("tag_encoder.", caption, width)
        shapes.update({k: v for k, v in tag_encoder.items() if alias_owner(k, head.num_hidden_layers) is None})
        shapes.update(_bert_shapes("text_decoder.bert.", caption, caption.hidden_size))
        h, vocab = caption.hidden_size, caption.vocab_size
        shapes.update({"text_decoder.cls.predictions.bias": (vocab,),
                       "text_decoder.cls.predictions.transform.dense.weight": (h, h),
                       "text_decoder.cls.predictions.transform.dense.bias": (h,),
                       "text_decoder.cls.predictions.transform.LayerNorm.weight": (h,),
                       "text_decoder.cls.predictions.transform.LayerNorm.bias": (h,)})
    return shapes


def _bert_shapes(prefix, config, kv_width, embeddings=True, self_attention=True):
    h, inter = config.hidden_size, config.intermediate_size
    shapes = {}
    if embeddings:
        shapes.update({f"{prefix}embeddings.word_embeddings.weight": (config.vocab_size, h),
                       f"{prefix}embeddings.position_embeddings.weight": (config.max_position_embeddings, h),
                       f"{prefix}embeddings.LayerNorm.weight": (h,), f"{prefix}embeddings.LayerNorm.bias": (h,)})
    linears = {"crossattention.self.query": (h, h), "crossattention.self.key": (h, kv_width),
               "crossattention.self.value": (h, kv_width), "crossattention.output.dense": (h, h),
               "intermediate.dense": (inter, h), "output.dense": (h, inter)}
    norms = ["crossattention.output.LayerNorm", "output.LayerNorm"]
    if self_attention:
        linears.update({f"attention.{k}": (h, h) for k in ("self.query", "self.key", "self.value", "output.dense")})
        norms.append("attention.output.LayerNorm")
    for i in range(config.num_hidden_layers):
        p = f"{prefix}encoder.layer.{i}."
        for name, (out_f, in_f) in linears.items():
            shapes.update({f"{p}{name}.weight": (out_f, in_f), f"{p}{name}.bias": (out_f,)})
        for name in norms:
            shapes.update({f"{p}{name}.weight": (h,), f"{p}{name}.bias": (h,)})
    return shapes


def config_from_state_dict(params, source="state dict", caption_modules=None):
    """The catalog architecture (``<model_type>_<vit>_<image_size>``) whose shapes match converted weights."""
    from ..swin import config_from_state_dict as swin_config
    if "label_embed" not in params or "image_proj.weight" not in params:
        raise CheckpointError(f"{source}: not a RAM / RAM++ checkpoint (no label_embed / image_proj.weight)")
    swin = swin_config(params, prefix="visual_encoder.", source=source)
    model_type = "ram_plus" if "reweight_scale" in params else "ram"
    vit = {192: "swin_l", 128: "swin_b"}.get(swin.embed_dim)
    arch = f"{model_type}_{vit}_{swin.image_size}"
    if arch not in catalog.architectures(FAMILY):
        raise CheckpointError(f"{source}: {model_type} weights on a Swin with embed_dim {swin.embed_dim} match no "
                              f"architecture in {catalog.architectures(FAMILY)}")
    config = RAMConfig.from_yaml(catalog.arch_file(FAMILY, arch))
    has_caption = any(k.startswith(CAPTION_PREFIXES) for k in params)
    return config.replace(caption_modules=has_caption if caption_modules is None else caption_modules)


def convert_file(torch_path, mindspore_path, model_type=None, vit=None, model_name=None, caption_modules=False,
                 overwrite=False):
    """Convert a reference ``.pth`` to ``.safetensors``/``.ckpt`` (by suffix) + a ``<stem>.yaml`` config.

    The architecture comes from ``model_name`` or ``model_type`` + ``vit`` (both checked against the
    weights), else from the shapes. Missing or unexpected keys are errors. Output paths are checked before
    the weights are read; both files are written atomically and the checkpoint is re-opened and checked; an
    existing ``<stem>.yaml`` with another config is kept unless ``overwrite``. Returns a report dict.
    """
    from ...checkpoint import load_torch_state_dict
    from ..convert_utils import check_outputs, resolve_model_name, save_converted
    from ..swin import SwinTransformer
    wanted = resolve_model_name(FAMILY, model_name).arch if model_name else None
    check_outputs(mindspore_path, inputs=[torch_path])
    source = load_torch_state_dict(torch_path)
    # the keys config_from_state_dict reads have the same names before and after conversion
    inferred = config_from_state_dict(source, source=str(torch_path), caption_modules=caption_modules)
    arch = f"{inferred.model_type}_{inferred.vit}_{inferred.image_size}"
    if model_type or vit:
        wanted = f"{model_type or inferred.model_type}_{vit or inferred.vit}_{inferred.image_size}"
    if wanted is not None and wanted != arch:
        raise CheckpointError(f"{torch_path}: the weights are {arch}, not {wanted}")
    params, report = convert_state_dict(source, inferred)
    swin = {p.name: p.shape for p in SwinTransformer(inferred.swin_config).get_parameters()}
    expected = expected_shapes(inferred, swin)
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(params) if tuple(params[k].shape) != tuple(expected[k]))
    if missing or unexpected or mismatched:
        raise CheckpointError(f"{torch_path}: does not match {arch}: missing {missing[:20]}, unexpected "
                              f"{unexpected[:20]}, shape mismatches {mismatched[:20]}")
    mindspore_path = Path(mindspore_path)
    size = sum(v.nbytes for v in params.values())
    if mindspore_path.suffix != ".safetensors" and size > CKPT_LIMIT:
        raise CheckpointError(f"{size / 1e9:.2f} GB of weights do not fit a .ckpt (2 GB protobuf limit); "
                              f"write {mindspore_path.with_suffix('.safetensors')} instead")
    checkpoint, config_path = save_converted(params, inferred, mindspore_path, overwrite=overwrite)
    return {"architecture": arch, "caption_modules": inferred.caption_modules, "parameters": len(params),
            "dropped_buffers": len(report["buffers"]), "dropped_aliases": len(report["aliases"]),
            "dropped_caption_modules": len(report["caption_modules"]), "mindspore_path": str(checkpoint),
            "config_path": str(config_path)}


def _convert(args):
    report = convert_file(args.torch_path, args.mindspore_path, args.model_type, args.vit, args.model_name,
                          args.caption_modules, overwrite=args.overwrite)
    print(f"converted {args.torch_path} -> {report['mindspore_path']} (re-read: {report['parameters']} tensors)\n"
          f"  architecture {report['architecture']}, caption modules "
          f"{'kept' if report['caption_modules'] else 'dropped'}\n"
          f"  dropped: {report['dropped_buffers']} buffers (recomputed), {report['dropped_aliases']} tied aliases, "
          f"{report['dropped_caption_modules']} caption-module tensors\n  config: {report['config_path']}")


def main(argv=None):
    """Command line: ``--torch_path --mindspore_path [--model_type --vit | --model_name] [--caption_modules]
    [--overwrite --verbose --debug]``. Returns the exit code: 0, or 2 with one line on stderr."""
    from ..convert_utils import converter_parser, run_converter
    parser = converter_parser("Convert recognize-anything RAM / RAM++ weights to MindSpore")
    parser.add_argument("--torch_path", required=True, help="ram_plus_swin_large_14m.pth, ram_swin_large_14m.pth ...")
    parser.add_argument("--mindspore_path", required=True,
                        help="output .safetensors or .ckpt (a <stem>.yaml config is written beside)")
    parser.add_argument("--model_type", choices=["ram", "ram_plus"], default=None,
                        help="expected model (default: infer)")
    parser.add_argument("--vit", choices=["swin_l", "swin_b"], default=None, help="expected encoder (default: infer)")
    parser.add_argument("--model_name", default=None, help="expected catalog name, e.g. ram_plus_swin_l_384")
    parser.add_argument("--caption_modules", action="store_true",
                        help="RAM: keep the captioning-only tag_encoder/text_decoder (dropped by default)")
    return run_converter(_convert, parser, argv)
