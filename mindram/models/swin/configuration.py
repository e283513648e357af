"""Swin Transformer configuration (recognize-anything's ``ram/models/swin_transformer.py`` arguments).

The four image encoders of RAM / RAM++ / Tag2Text are data files under
``mindram/configs/swin/model/`` (``swin_l_384``, ``swin_l_224``, ``swin_b_384``, ``swin_b_224``; the
reference's JSON names such as ``config_swinL_384`` are aliases). Fields the reference accepts but
RAM never changes from zero (``drop_rate``, ``attn_drop_rate``) and ``use_checkpoint`` (a memory
trick with no numeric effect) are not fields: no released model uses them.
"""
import dataclasses
from typing import List, Optional

from ...errors import ConfigError
from ..configuration_utils import PretrainedConfig

FAMILY = "swin"


def input_shape_error(shape, in_chans, patch_size):
    """Why a (B, C, H, W) pixel batch cannot be encoded, or None: C must be ``in_chans`` and H, W positive
    multiples of ``patch_size`` (the smallest input is one patch; any larger multiple works)."""
    if len(shape) != 4 or shape[1] != in_chans:
        return f"expected (B, {in_chans}, H, W) images, got shape {tuple(shape)}"
    bad = [side for side in shape[2:] if side < patch_size or side % patch_size]
    if bad:
        return (f"image sides must be positive multiples of patch_size={patch_size} (smallest {patch_size}x"
                f"{patch_size}), got {shape[2]}x{shape[3]}")
    return None


@dataclasses.dataclass(frozen=True)
class StageLayout:
    """What one stage computes: token grid side, width, heads, window side and shift of odd blocks."""

    resolution: int
    dim: int
    depth: int
    num_heads: int
    window_size: int
    shift_size: int
    downsample: bool


@dataclasses.dataclass
class SwinConfig(PretrainedConfig):
    """Hyper-parameters of ``SwinTransformer`` (defaults = the reference constructor's, Swin-T/224).

    ``SwinConfig.from_pretrained("swin_l_384")`` (or ``"config_swinL_384"``, or a ``.yaml`` path)
    reads an architecture file of ``mindram/configs/swin/model/``.
    """

    family = FAMILY
    arch_name = "SwinTransformer"

    image_size: int = 224
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 96
    depths: List[int] = dataclasses.field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: List[int] = dataclasses.field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    qk_scale: Optional[float] = None       # None: head_dim ** -0.5
    ape: bool = False                      # absolute position embedding after the patch embedding
    patch_norm: bool = True                # LayerNorm after the patch embedding
    drop_path_rate: float = 0.1            # stochastic depth, linear over all blocks (training only)
    layer_norm_eps: float = 1e-5

    def validate(self):
        for key in ("image_size", "patch_size", "in_chans", "embed_dim", "window_size", "mlp_ratio",
                    "layer_norm_eps"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"SwinConfig.{key}: expected a positive value, got {getattr(self, key)!r}")
        if self.qk_scale is not None and self.qk_scale <= 0:
            raise ConfigError(f"SwinConfig.qk_scale: expected None or a positive value, got {self.qk_scale!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"SwinConfig.drop_path_rate: expected a value in [0, 1), got {self.drop_path_rate!r}")
        for key in ("depths", "num_heads"):
            value = getattr(self, key)
            if not isinstance(value, (list, tuple)) or not value or \
                    not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise ConfigError(f"SwinConfig.{key}: expected a non-empty list of positive ints, got {value!r}")
            object.__setattr__(self, key, [int(v) for v in value])
        if len(self.depths) != len(self.num_heads):
            raise ConfigError(f"SwinConfig: depths {self.depths} and num_heads {self.num_heads} differ in length")
        if self.image_size < self.patch_size:
            raise ConfigError(f"SwinConfig.patch_size={self.patch_size} exceeds image_size={self.image_size}")
        self.stages()  # raises for layouts the reference cannot run

    @property
    def num_features(self):
        """Width of the output tokens (the reference JSON's ``vision_width``)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def patches_resolution(self):
        return self.image_size // self.patch_size

    def check_input_size(self, height, width=None):
        """Raise ``ValueError`` unless a height × width (default square) image can be encoded (any positive
        multiples of ``patch_size``; ``image_size`` is the resolution the reference builds and trains at)."""
        width = height if width is None else width
        error = input_shape_error((1, self.in_chans, height, width), self.in_chans, self.patch_size)
        if error:
            raise ValueError(f"SwinConfig (patch_size={self.patch_size}, image_size={self.image_size}): {error}")

    def output_grid(self, height, width=None):
        """(rows, cols) of the last stage's token grid for a height × width image (each patch merging rounds
        an odd side up)."""
        self.check_input_size(height, width)
        rows, cols = height // self.patch_size, (height if width is None else width) // self.patch_size
        for _ in self.depths[1:]:
            rows, cols = (rows + 1) // 2, (cols + 1) // 2
        return rows, cols

    @property
    def num_tokens(self):
        """Tokens of the output sequence at ``image_size``: the average-pooled token plus the last stage's grid."""
        return 1 + self.stages()[-1].resolution ** 2

    def stages(self):
        """Per-stage :class:`StageLayout` at ``image_size``, with the reference's rule that a stage whose grid
        is not larger than the window attends globally (window = grid, no shift). The window side fixes the
        bias table; other input sizes keep it (``windows.py``)."""
        layout, resolution = [], self.patches_resolution
        for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
            dim = self.embed_dim * 2 ** i
            last = i == len(self.depths) - 1
            if dim % heads:
                raise ConfigError(f"SwinConfig: stage {i} width {dim} is not divisible by num_heads[{i}]={heads}")
            if resolution < 1:
                raise ConfigError(f"SwinConfig: stage {i} has an empty token grid (image_size={self.image_size})")
            window, shift = self.window_size, self.window_size // 2
            if resolution <= window:
                window, shift = resolution, 0
            elif resolution % window:
                raise ConfigError(f"SwinConfig: stage {i} token grid {resolution}x{resolution} is not a multiple of "
                                  f"window_size={window} (the reference does not pad)")
            if not last and resolution % 2:
                raise ConfigError(f"SwinConfig: stage {i} token grid {resolution}x{resolution} is odd; "
                                  f"patch merging needs an even grid")
            layout.append(StageLayout(resolution, dim, depth, heads, window, shift, not last))
            resolution //= 2
        return layout
