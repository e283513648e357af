"""Layer ids of Swin parameters for layer-wise learning-rate decay (SimMIM / Swin fine-tuning rule).

With L = Σ depths + 2 ids: 0 for the patch embedding (and an absolute position embedding),
1 + Σ depths[:s] + b for block b of stage s, Σ depths[:s+1] (the stage's last block) for the patch
merging after stage s, and L − 1 for the final norm — the id a model also gives everything after the
encoder. ``mindram.trainer.optim.layer_decay_adamw`` turns the ids into learning-rate scales.
"""


def swin_num_layer_ids(depths):
    """L = Σ depths + 2: the patch embedding, every block, and the top (final norm and after)."""
    return sum(depths) + 2


def swin_layer_id(name, depths):
    """Layer id of a Swin parameter named relative to the encoder (``layers.0.blocks.1.attn.qkv.weight``)."""
    parts = name.split(".")
    if parts[0] in ("patch_embed", "absolute_pos_embed"):
        return 0
    if parts[0] == "layers":
        stage = int(parts[1])
        if parts[2] == "downsample":
            return sum(depths[:stage + 1])
        return sum(depths[:stage]) + int(parts[3]) + 1
    return swin_num_layer_ids(depths) - 1
