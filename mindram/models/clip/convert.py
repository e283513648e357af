"""PyTorch CLIP state dicts ↔ mindram parameter names, and architecture inference from shapes.

Pure functions on ``{name: np.ndarray}`` (no torch):
- :func:`convert_state_dict` accepts OpenAI/open_clip keys (``visual.*``, ``token_embedding.weight``,
  ``transformer.*`` …, also open_clip's ``text.*`` layout) and Hugging Face ``CLIPModel`` keys
  (``vision_model.*``, ``text_model.*``), returning mindram names.
- :func:`load_pdparams` reads PaddleMIX / PaddleNLP ``model_state.pdparams`` (a pickled ``{name: ndarray}``,
  read by the restricted unpickler: nothing in it is executed) and maps PaddleMIX's names to open_clip's
  (:func:`from_paddle`: Paddle ``Linear`` weights are stored (in, out), transposed vs torch; separate
  ``q_proj``/``k_proj``/``v_proj`` are packed into ``in_proj_*``).
- :func:`to_open_clip_state_dict` is its inverse (open_clip/OpenAI names), so a round trip is a test.
- :func:`config_from_state_dict` finds the architecture file whose shapes match the weights (the
  head count cannot be read from shapes: ViT-H/g/bigG use 80/88/104-wide heads).
"""
import errno
import json
import logging
import re
import zipfile
from pathlib import Path

import numpy as np

from ... import catalog
from ...errors import CheckpointError, ConfigError, UnsafeCheckpointError
from ...utils.safe_pickle import UnsafePickleError, load_restricted_pickle
from .configuration import FAMILY, CLIPConfig

logger = logging.getLogger(__name__)

# Entries of OpenAI/open_clip files that are not parameters.
IGNORED_KEYS = {"input_resolution", "context_length", "vocab_size", "attn_mask", "text.attn_mask"}
_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def _from_hf(sd):
    """Hugging Face ``CLIPModel`` keys → OpenAI keys (q/k/v packed, projections transposed)."""
    out = {}
    rename = [
        (r"^vision_model\.embeddings\.patch_embedding\.weight$", "visual.conv1.weight"),
        (r"^vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
        (r"^vision_model\.embeddings\.position_embedding\.weight$", "visual.positional_embedding"),
        (r"^vision_model\.pre_layrnorm\.", "visual.ln_pre."),
        (r"^vision_model\.post_layernorm\.", "visual.ln_post."),
        (r"^vision_model\.encoder\.layers\.", "visual.transformer.resblocks."),
        (r"^text_model\.embeddings\.token_embedding\.weight$", "token_embedding.weight"),
        (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
        (r"^text_model\.final_layer_norm\.", "ln_final."),
        (r"^text_model\.encoder\.layers\.", "transformer.resblocks."),
        (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
        (r"\.layer_norm1\.", ".ln_1."), (r"\.layer_norm2\.", ".ln_2."),
        (r"\.mlp\.fc1\.", ".mlp.c_fc."), (r"\.mlp\.fc2\.", ".mlp.c_proj."),
    ]
    qkv = {}
    for key, value in sd.items():
        if key.endswith("position_ids"):
            continue
        if key == "visual_projection.weight":
            out["visual.proj"] = value.T
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.T
            continue
        new = key
        for pattern, repl in rename:
            new = re.sub(pattern, repl, new)
        match = re.match(r"^(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", new)
        if match:
            qkv.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = value
            continue
        out[new] = value
    for (prefix, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"incomplete q/k/v projections under {prefix}: have {sorted(parts)}")
        out[f"{prefix}.attn.in_proj_{kind}"] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=0)
    return out


_PADDLE_QKV = re.compile(r"^(.*\.attn)\.([qkv])_proj\.(weight|bias)$")
_PADDLE_LINEAR_WEIGHTS = (".attn.out_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight", ".attn.in_proj_weight")


def from_paddle(sd):
    """PaddleMIX CLIP names/layouts → open_clip's: (in, out) Linear weights transposed, q/k/v packed (a missing
    k bias, as EVA-style attention has, is zeros), bfloat16 (stored as uint16) widened; non-arrays skipped."""
    out, qkv = {}, {}
    for key, value in sd.items():
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
            value = value[1]  # paddle.save of a Tensor outside a state dict: (parameter name, array)
        if not isinstance(value, np.ndarray):
            continue  # e.g. Paddle's "StructuredToParameterName@@" table
        if value.dtype == np.uint16:
            value = (value.astype(np.uint32) << 16).view(np.float32)
        if ".attn.qkv_proj." in key:
            raise CheckpointError(f"{key}: fused per-head qkv_proj (fuse_attention_qkv=True) is not supported; "
                                  f"save the PaddleMIX model with separate q_proj/k_proj/v_proj")
        match = _PADDLE_QKV.match(key)
        if match:
            qkv.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = value
            continue
        out[key] = value.T if key.endswith(_PADDLE_LINEAR_WEIGHTS) and value.ndim == 2 else value
    for (prefix, kind), parts in qkv.items():
        if kind == "bias" and set(parts) == {"q", "v"}:
            parts["k"] = np.zeros_like(parts["q"])
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"incomplete q/k/v projections under {prefix}: have {sorted(parts)}")
        packed = [parts[n].T if kind == "weight" else parts[n] for n in "qkv"]
        out[f"{prefix}.in_proj_{kind}"] = np.concatenate(packed, axis=0)
    return out


def load_pdparams(path):
    """A PaddleMIX/PaddleNLP ``.pdparams`` as open_clip-named ``{name: ndarray}`` (restricted unpickling)."""
    try:
        obj = load_restricted_pickle(path)
    except UnsafePickleError as e:
        raise UnsafeCheckpointError(str(e)) from None
    params = from_paddle(obj) if isinstance(obj, dict) else {}
    if not params:
        raise CheckpointError(f"{path}: not a Paddle state dict (expected a pickled {{name: ndarray}} mapping, "
                              f"got {type(obj).__name__})")
    return params


def convert_state_dict(sd):
    """PyTorch CLIP weights (any supported layout) → ``{mindram name: float32 array}``."""
    if any(k.startswith(("vision_model.", "text_model.")) for k in sd):
        sd = _from_hf(sd)
    out = {}
    for key, value in sd.items():
        if key in IGNORED_KEYS or not isinstance(value, np.ndarray):
            continue
        if key.startswith(("visual.", "text.")) or key == "logit_scale":
            name = key
        elif key.startswith(_TEXT_KEYS):
            name = "text." + key
        else:
            name = key  # reported as unexpected by the loader
        array = np.asarray(value)
        if name == "logit_scale":
            array = array.reshape(1)
        out[name] = array.astype(np.float32) if array.dtype != np.float32 else array
    return out


def to_open_clip_state_dict(params):
    """Inverse of :func:`convert_state_dict`: mindram names → open_clip/OpenAI names (0-d logit_scale)."""
    out = {(k[len("text."):] if k.startswith("text.") else k): v for k, v in params.items()}
    if "logit_scale" in out:
        out["logit_scale"] = np.reshape(out["logit_scale"], ())
    return out


def _count_layers(params, prefix):
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in params for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0


def shape_signature(params, source="state dict"):
    """The architecture facts that the weights determine, as a dict."""
    try:
        conv = params["visual.conv1.weight"]
        return {
            "projection_dim": params["visual.proj"].shape[1],
            "vision": (conv.shape[0], conv.shape[-1], params["visual.positional_embedding"].shape[0],
                       _count_layers(params, "visual.transformer.resblocks."),
                       params["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "text": (params["text.token_embedding.weight"].shape[0], params["text.positional_embedding"].shape[0],
                     params["text.token_embedding.weight"].shape[1],
                     _count_layers(params, "text.transformer.resblocks."),
                     params["text.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        }
    except KeyError as e:
        raise CheckpointError(f"{source}: not a CLIP ViT checkpoint, key {e} is missing") from e


def config_signature(config):
    v, t = config.vision_config, config.text_config
    return {"projection_dim": config.projection_dim,
            "vision": (v.hidden_size, v.patch_size, v.num_tokens, v.num_hidden_layers, v.intermediate_size),
            "text": (t.vocab_size, t.max_position_embeddings, t.hidden_size, t.num_hidden_layers,
                     t.intermediate_size)}


def matching_architectures(params):
    """Architecture names (bare, GELU variants first) whose shapes equal those of ``params``."""
    wanted = shape_signature(params)
    names = sorted(catalog.architectures(FAMILY), key=lambda n: ("quickgelu" in n, n))
    return [n for n in names if config_signature(CLIPConfig.from_yaml(catalog.arch_file(FAMILY, n))) == wanted]


def config_from_state_dict(params, hidden_act=None, source="state dict"):
    """Infer a :class:`CLIPConfig` from converted weights.

    The architecture is the known one whose shapes match (head width included); an unknown shape
    falls back to OpenAI's rule (64-wide heads) with a warning. ``hidden_act`` cannot be read from
    weights: pass it (``quick_gelu`` for OpenAI files) or get open_clip's default, exact GELU.
    """
    sig = shape_signature(params, source)
    matches = matching_architectures(params)
    if matches:
        config = CLIPConfig.from_yaml(catalog.arch_file(FAMILY, matches[0]))
        logger.info("%s: shapes match architecture %s", source, matches[0])
    else:
        (vw, patch, tokens, vl, vi), (vocab, ctx, tw, tl, ti) = sig["vision"], sig["text"]
        grid = int(round((tokens - 1) ** 0.5))
        logger.warning("%s: shapes match no known architecture; assuming 64-wide attention heads", source)
        config = CLIPConfig.from_dict({
            "projection_dim": sig["projection_dim"],
            "vision_config": {"image_size": grid * patch, "patch_size": patch, "hidden_size": vw,
                              "num_hidden_layers": vl, "num_attention_heads": max(1, vw // 64), "intermediate_size": vi,
                              "hidden_act": "gelu"},
            "text_config": {"vocab_size": vocab, "max_position_embeddings": ctx, "hidden_size": tw,
                            "num_hidden_layers": tl, "num_attention_heads": max(1, tw // 64), "intermediate_size": ti,
                            "hidden_act": "gelu"}})
    if hidden_act is not None:
        config = config.replace(vision_config=config.vision_config.replace(hidden_act=hidden_act),
                                text_config=config.text_config.replace(hidden_act=hidden_act))
    return config


def expected_shapes(config):
    """``{name: shape}`` of every parameter of ``CLIPModel(config)``, without building it."""
    v, t, dim = config.vision_config, config.text_config, config.projection_dim
    shapes = {"logit_scale": (1,),
              "visual.conv1.weight": (v.hidden_size, v.num_channels, v.patch_size, v.patch_size),
              "visual.class_embedding": (v.hidden_size,),
              "visual.positional_embedding": (v.num_tokens, v.hidden_size),
              "visual.proj": (v.hidden_size, dim),
              "text.token_embedding.weight": (t.vocab_size, t.hidden_size),
              "text.positional_embedding": (t.max_position_embeddings, t.hidden_size),
              "text.text_projection": (t.hidden_size, dim)}
    for prefix, width in (("visual.ln_pre", v.hidden_size), ("visual.ln_post", v.hidden_size),
                          ("text.ln_final", t.hidden_size)):
        shapes.update({f"{prefix}.weight": (width,), f"{prefix}.bias": (width,)})
    for tower, cfg in (("visual", v), ("text", t)):
        width, hidden = cfg.hidden_size, cfg.intermediate_size
        for i in range(cfg.num_hidden_layers):
            p = f"{tower}.transformer.resblocks.{i}"
            shapes.update({f"{p}.ln_1.weight": (width,), f"{p}.ln_1.bias": (width,),
                           f"{p}.ln_2.weight": (width,), f"{p}.ln_2.bias": (width,),
                           f"{p}.attn.in_proj_weight": (3 * width, width), f"{p}.attn.in_proj_bias": (3 * width,),
                           f"{p}.attn.out_proj.weight": (width, width), f"{p}.attn.out_proj.bias": (width,),
                           f"{p}.mlp.c_fc.weight": (hidden, width), f"{p}.mlp.c_fc.bias": (hidden,),
                           f"{p}.mlp.c_proj.weight": (width, hidden), f"{p}.mlp.c_proj.bias": (width,)})
    return shapes


def _source_file(torch_path):
    """``(file to read, activation, format)``: a Hugging Face folder resolves to its weights file; the
    activation is ``None`` where the format does not say it."""
    path = Path(torch_path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "input checkpoint not found", str(path))
    if path.is_dir():
        files = [path / n for n in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors",
                                    "open_clip_pytorch_model.bin", "model_state.pdparams") if (path / n).is_file()]
        if not files:
            raise CheckpointError(f"{path}: no model.safetensors, pytorch_model.bin, open_clip_pytorch_model.bin or "
                                  f"model_state.pdparams in the directory")
        if files[0].suffix == ".pdparams":
            return files[0], None, "paddlemix"
        config_json = path / "config.json"
        if config_json.is_file() and files[0].name in ("model.safetensors", "pytorch_model.bin"):
            try:
                hf = json.loads(config_json.read_text(encoding="utf-8"))
            except ValueError as e:
                raise ConfigError(f"{config_json}: not valid JSON ({e})") from e
            return files[0], (hf.get("vision_config") or {}).get("hidden_act", "quick_gelu"), "huggingface"
        return files[0], None, "open_clip"
    if path.suffix == ".pdparams":
        return path, None, "paddlemix"
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist()):
                    return path, "quick_gelu", "openai-torchscript"
    except zipfile.BadZipFile:
        pass  # the checkpoint reader reports the corrupt archive
    return path, None, "open_clip"


def convert_file(torch_path, mindspore_path, model_name=None, overwrite=False):
    """Convert a PyTorch CLIP checkpoint to a MindSpore ``.ckpt``/``.safetensors`` plus a ``<stem>.yaml`` config.

    Accepts OpenAI TorchScript ``.pt``, open_clip ``.bin/.pt/.pth/.safetensors`` (``state_dict``
    wrappers and ``module.`` prefixes included), Hugging Face CLIP folders and PaddleMIX ``model_state.pdparams``
    (or its folder, whose name, a PaddleMIX model id, gives the weights when ``model_name`` is not given).
    Output paths are checked before the weights are read (:func:`mindram.models.convert_utils.check_outputs`);
    both files are written atomically and the checkpoint is re-opened and checked; an existing ``<stem>.yaml``
    with another config is kept unless ``overwrite``. Returns a report dict (architecture, activation,
    missing/unexpected keys).
    """
    from ...checkpoint import load_torch_state_dict
    from ..convert_utils import check_outputs, resolve_model_name, save_converted
    record = resolve_model_name(FAMILY, model_name) if model_name is not None else None
    source_file, hidden_act, fmt = _source_file(torch_path)
    check_outputs(mindspore_path, inputs=[source_file])
    source = load_pdparams(source_file) if fmt == "paddlemix" else load_torch_state_dict(source_file)
    if record is None and fmt == "paddlemix":
        record = _paddlemix_record(source_file, {("text." + k if k.startswith(_TEXT_KEYS) else k): v
                                                 for k, v in source.items()})
    ignored = sorted(k for k in source if k in IGNORED_KEYS)
    params = convert_state_dict(source)
    if record is not None:
        config = CLIPConfig.from_yaml(record.arch_file)
        if config_signature(config) != shape_signature(params, source=torch_path):
            raise CheckpointError(f"{torch_path}: weights do not have the shapes of {model_name!r} "
                                  f"(architecture {record.arch}); architectures that match: "
                                  f"{matching_architectures(params) or 'none'}")
        arch = record.arch
    else:
        if hidden_act is None:
            logger.warning("%s: the activation cannot be read from an open_clip state dict; assuming exact GELU "
                           "(pass --model_name, e.g. clip_vit_b_32_quickgelu, for QuickGELU weights)", torch_path)
        config = config_from_state_dict(params, hidden_act=hidden_act, source=str(torch_path))
        arch = (matching_architectures(params) or ["custom"])[0]
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    if missing:
        raise CheckpointError(f"{torch_path}: {len(missing)} parameters missing: {missing[:20]}")
    for key in unexpected:
        params.pop(key)
    checkpoint, config_path = save_converted(params, config, mindspore_path, overwrite=overwrite)
    return {"format": fmt, "architecture": arch, "hidden_act": config.vision_config.hidden_act,
            "parameters": len(params), "missing": missing, "unexpected": unexpected, "ignored": ignored,
            "mindspore_path": str(checkpoint), "config_path": str(config_path)}


def _paddlemix_record(source_file, params):
    """The catalog weights a PaddleMIX download folder is named after (``.../CLIP-ViT-B-16-laion2B-s34B-b88K/``,
    a PaddleMIX model id alias) when their shapes match, else None."""
    for name in (source_file.parent.name, source_file.stem):
        try:
            record = catalog.resolve(FAMILY, name)
        except (KeyError, ConfigError):
            continue
        if record.tag and config_signature(CLIPConfig.from_yaml(record.arch_file)) == shape_signature(params):
            logger.info("%s: PaddleMIX weights of %s (from the folder name)", source_file, record.name)
            return record
    return None


def _convert(args):
    report = convert_file(args.torch_path, args.mindspore_path, args.model_name, overwrite=args.overwrite)
    print(f"converted {args.torch_path} ({report['format']}) -> {report['mindspore_path']} (re-read: "
          f"{report['parameters']} tensors)\n"
          f"  architecture {report['architecture']}, activation {report['hidden_act']}\n"
          f"  missing keys: {report['missing'] or 'none'}\n"
          f"  unexpected keys (dropped): {report['unexpected'] or 'none'}\n"
          f"  ignored non-parameter entries: {report['ignored'] or 'none'}\n  config: {report['config_path']}")


def main(argv=None):
    """Command line: ``--torch_path --mindspore_path [--model_name] [--overwrite --verbose --debug]``.

    Returns the exit code: 0, or 2 with one line on stderr (``--debug``: the traceback).
    """
    from ..convert_utils import converter_parser, run_converter
    parser = converter_parser("Convert PyTorch CLIP weights to a MindSpore checkpoint")
    parser.add_argument("--torch_path", required=True,
                        help="OpenAI .pt, open_clip .bin/.pt/.pth/.safetensors, a Hugging Face CLIP folder, or a "
                             "PaddleMIX model_state.pdparams (or its folder)")
    parser.add_argument("--mindspore_path", required=True,
                        help="output .ckpt or .safetensors (a <stem>.yaml config is written beside)")
    parser.add_argument("--model_name", default=None,
                        help="expected model, e.g. clip_vit_b_32 or clip_vit_b_32_quickgelu (default: infer)")
    return run_converter(_convert, parser, argv)
