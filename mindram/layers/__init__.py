"""Building blocks written once and shared by CLIP, Swin and the tagging heads."""
from .activation import GELU, QuickGELU, get_activation
from .attention import MultiheadAttention
from .embedding import Embedding
from .linear import BroadcastAdd, Linear
from .norm import LayerNorm
from .patch_embed import PatchEmbed
from .permute import Permute
from .transformer import MLP, ResidualAttentionBlock, Transformer

__all__ = ["GELU", "QuickGELU", "get_activation", "MultiheadAttention", "Embedding", "BroadcastAdd", "Linear",
           "LayerNorm", "PatchEmbed", "Permute", "MLP", "ResidualAttentionBlock", "Transformer"]
