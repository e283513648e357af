"""recognize-anything Swin state dicts ↔ mindram :class:`SwinTransformer` names (pure functions, no torch).

The map is the identity except for two renames per block, because the blocks use the shared
:class:`~mindram.layers.MLP`::

    <prefix>layers.{i}.blocks.{j}.mlp.fc1.{weight,bias}  ->  <prefix>layers.{i}.blocks.{j}.mlp.c_fc.{weight,bias}
    <prefix>layers.{i}.blocks.{j}.mlp.fc2.{weight,bias}  ->  <prefix>layers.{i}.blocks.{j}.mlp.c_proj.{weight,bias}

and drops the torch buffers ``*.attn.relative_position_index`` (every block) and ``*.attn_mask``
(shifted blocks), which the model recomputes, as the reference loader does. The prefix is kept, so
in a RAM checkpoint ``visual_encoder.*`` keys map onto ``RAM.visual_encoder.*``; keys outside the
prefix are not touched (the RAM converter handles them).
"""
import re

import numpy as np

from ... import catalog
from ...errors import CheckpointError
from .configuration import FAMILY, SwinConfig

BUFFER_SUFFIXES = (".relative_position_index", ".attn_mask")
_TO_MINDRAM = ((re.compile(r"\.mlp\.fc1\.(weight|bias)$"), r".mlp.c_fc.\1"),
               (re.compile(r"\.mlp\.fc2\.(weight|bias)$"), r".mlp.c_proj.\1"))
_TO_TORCH = ((re.compile(r"\.mlp\.c_fc\.(weight|bias)$"), r".mlp.fc1.\1"),
             (re.compile(r"\.mlp\.c_proj\.(weight|bias)$"), r".mlp.fc2.\1"))


def _rename(name, rules):
    for pattern, repl in rules:
        name = pattern.sub(repl, name)
    return name


def is_swin_buffer(name):
    """True for the torch buffers the converter drops (recomputed by the model)."""
    return name.endswith(BUFFER_SUFFIXES)


def convert_swin_state_dict(torch_sd, prefix="visual_encoder."):
    """``{torch name: array}`` → ``{mindram name: float32 array}`` for the keys under ``prefix``
    (``""`` for a bare Swin state dict), buffers dropped."""
    out = {}
    for key, value in torch_sd.items():
        if not key.startswith(prefix) or is_swin_buffer(key):
            continue
        array = np.asarray(value)
        out[prefix + _rename(key[len(prefix):], _TO_MINDRAM)] = \
            array if array.dtype == np.float32 else array.astype(np.float32)
    return out


def to_torch_swin_state_dict(params, prefix="visual_encoder."):
    """Inverse of :func:`convert_swin_state_dict` (without the buffers, which torch rebuilds)."""
    return {prefix + _rename(k[len(prefix):], _TO_TORCH): v for k, v in params.items() if k.startswith(prefix)}


def _table_window(rows, source):
    window = (int(round(rows ** 0.5)) + 1) // 2
    if (2 * window - 1) ** 2 != rows:
        raise CheckpointError(f"{source}: relative_position_bias_table has {rows} rows, not (2*window-1)^2")
    return window


def config_from_state_dict(params, prefix="visual_encoder.", source="state dict"):
    """The known Swin architecture (``mindram/configs/swin/model``) whose shapes match the weights.

    Width, depths, heads and window come from the shapes; the image size does not (the torch
    ``attn_mask`` buffers are dropped), so it is that of the matching architecture file.
    """
    try:
        embed_dim = int(np.shape(params[prefix + "patch_embed.proj.weight"])[0])
    except KeyError as e:
        raise CheckpointError(f"{source}: not a Swin checkpoint, key {e} is missing") from e
    pattern = re.compile(re.escape(prefix) + r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$")
    tables = {}
    for key, value in params.items():
        match = pattern.match(key)
        if match:
            shape = tuple(np.shape(value))
            if len(shape) != 2:
                raise CheckpointError(f"{source}: {key} has shape {shape}, expected (rows, heads)")
            tables[int(match.group(1)), int(match.group(2))] = shape
    stages = sorted({i for i, _ in tables})
    depths = [sum(1 for i2, _ in tables if i2 == i) for i in stages]
    heads = [tables[i, 0][1] if (i, 0) in tables else None for i in stages]
    window = _table_window(tables[0, 0][0], source) if (0, 0) in tables else None
    for name in catalog.architectures(FAMILY):
        config = SwinConfig.from_pretrained(name)
        if (config.embed_dim, config.depths, config.num_heads, config.window_size) == \
                (embed_dim, depths, heads, window):
            return config
    raise CheckpointError(f"{source}: Swin weights with embed_dim={embed_dim}, depths={depths}, num_heads={heads}, "
                          f"window_size={window} match no architecture in {catalog.architectures(FAMILY)}")


def expected_shapes(config):
    """``{mindram name: shape}`` of every parameter of ``SwinTransformer(config)`` (no prefix), without
    building it (a Swin-L build initialises 195M parameters)."""
    c = config if isinstance(config, SwinConfig) else SwinConfig.from_dict(dict(config))
    shapes = {"patch_embed.proj.weight": (c.embed_dim, c.in_chans, c.patch_size, c.patch_size),
              "patch_embed.proj.bias": (c.embed_dim,)}
    norms = {"norm": c.num_features}
    if c.patch_norm:
        norms["patch_embed.norm"] = c.embed_dim
    if c.ape:
        shapes["absolute_pos_embed"] = (1, c.patches_resolution ** 2, c.embed_dim)
    for i, stage in enumerate(c.stages()):
        dim, hidden = stage.dim, int(stage.dim * c.mlp_ratio)
        for j in range(stage.depth):
            p = f"layers.{i}.blocks.{j}."
            norms.update({p + "norm1": dim, p + "norm2": dim})
            shapes.update({p + "attn.relative_position_bias_table": ((2 * stage.window_size - 1) ** 2, stage.num_heads),
                           p + "attn.qkv.weight": (3 * dim, dim), p + "attn.proj.weight": (dim, dim),
                           p + "attn.proj.bias": (dim,), p + "mlp.c_fc.weight": (hidden, dim),
                           p + "mlp.c_fc.bias": (hidden,), p + "mlp.c_proj.weight": (dim, hidden),
                           p + "mlp.c_proj.bias": (dim,)})
            if c.qkv_bias:
                shapes[p + "attn.qkv.bias"] = (3 * dim,)
        if stage.downsample:
            norms[f"layers.{i}.downsample.norm"] = 4 * dim
            shapes[f"layers.{i}.downsample.reduction.weight"] = (2 * dim, 4 * dim)
    for name, width in norms.items():
        shapes.update({f"{name}.weight": (width,), f"{name}.bias": (width,)})
    return shapes
