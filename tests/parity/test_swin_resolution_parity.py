"""The resized absolute position embedding of a Swin run off its configured size equals torch's
``interpolate(mode="bicubic", align_corners=False, size=...)`` of the learnt grid (docs/ram.md#input-resolution)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindram.models.swin import SwinConfig, SwinTransformer
from mindram.models.swin.windows import bicubic_resize_matrix

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("src,dst", [(20, 26), (20, 9), (5, 5), (7, 1), (3, 17)])
def test_resize_matrix_is_torch_bicubic(src, dst):
    signal = np.random.default_rng(src * dst).standard_normal((1, 1, src, 1)).astype(np.float64)
    expected = torch.nn.functional.interpolate(torch.from_numpy(signal), size=(dst, 1), mode="bicubic",
                                               align_corners=False).numpy()[0, 0, :, 0]
    np.testing.assert_allclose(bicubic_resize_matrix(src, dst) @ signal[0, 0, :, 0], expected, atol=1e-6)


def test_position_embedding_is_torch_bicubic_of_the_grid():
    config = SwinConfig(image_size=40, patch_size=2, embed_dim=12, depths=[2, 2], num_heads=[2, 4], window_size=5,
                        ape=True)
    model = SwinTransformer(config)
    grid = model.absolute_pos_embed.asnumpy().reshape(1, 20, 20, 12).transpose(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(torch.from_numpy(grid), size=(26, 18), mode="bicubic",
                                               align_corners=False).numpy()
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        ours = model.position_embedding(26, 18).asnumpy()
    finally:
        ms.set_context(mode=previous)
    np.testing.assert_allclose(ours, expected.transpose(0, 2, 3, 1).reshape(1, 26 * 18, 12), atol=1e-6)
    assert model.position_embedding(20, 20) is model.absolute_pos_embed  # the configured grid: unchanged
    assert isinstance(model.position_embedding(20, 20), Tensor)
