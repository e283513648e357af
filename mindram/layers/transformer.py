"""Pre-norm transformer stack shared by the CLIP towers (open_clip's ``Transformer``).

Module names mirror open_clip (``resblocks.i.ln_1/attn/ln_2/mlp.c_fc/mlp.c_proj``) so that a
checkpoint maps onto this tree without renaming.
"""
from mindspore import nn

from .activation import get_activation
from .attention import MultiheadAttention
from .linear import Linear
from .norm import LayerNorm


class MLP(nn.Cell):
    """c_fc → activation → c_proj."""

    def __init__(self, width, hidden, act="gelu"):
        super().__init__()
        self.c_fc = Linear(width, hidden)
        self.act = get_activation(act)
        self.c_proj = Linear(hidden, width)

    def construct(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class ResidualAttentionBlock(nn.Cell):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width, heads, mlp_hidden, act="gelu", eps=1e-5, causal=False):
        super().__init__()
        self.ln_1 = LayerNorm(width, eps)
        self.attn = MultiheadAttention(width, heads, causal)
        self.ln_2 = LayerNorm(width, eps)
        self.mlp = MLP(width, mlp_hidden, act)

    def construct(self, x, attn_mask=None):
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Cell):
    """A stack of ``layers`` residual attention blocks of the same width (``causal``: the mask given to
    ``construct`` is the causal one; see :class:`~mindram.layers.attention.MultiheadAttention`)."""

    def __init__(self, width, layers, heads, mlp_hidden, act="gelu", eps=1e-5, causal=False):
        super().__init__()
        self.width, self.layers = int(width), int(layers)
        self.resblocks = nn.CellList(
            [ResidualAttentionBlock(width, heads, mlp_hidden, act, eps, causal) for _ in range(self.layers)])

    def construct(self, x, attn_mask=None):
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x
