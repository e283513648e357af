"""WeightMatMul: ``x @ weight.T`` taken as ``(weight @ x.T).T`` for the row counts where MindSpore's transposed-B
MatMul is slow; the same values and gradients as the plain product on either side of the window."""
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from mindram.errors import ConfigError
from mindram.layers import Linear
from mindram.layers.linear import (SWAPPED_INPUT_ELEMENTS, SWAPPED_ROWS, SWAPPED_ROWS_ENV, WeightMatMul, swapped_rows,
                                   takes_swapped_product)
from mindram.utils.graph import run_in_graph_mode


class _Loss(nn.Cell):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def construct(self, x):
        return (self.layer(x) ** 2).sum()


def _grads(layer, x):
    grad = ops.GradOperation(get_all=True, get_by_list=True)(_Loss(layer), layer.trainable_params())
    (dx,), dparams = run_in_graph_mode(grad, Tensor(x))
    return [dx.asnumpy()] + [d.asnumpy() for d in dparams]


@pytest.mark.parametrize("rows, in_features, out_features", [
    (1, 24, 40), (SWAPPED_ROWS[0], 24, 40), (20, 24, 40), (SWAPPED_ROWS[1] - 1, 24, 40), (SWAPPED_ROWS[1], 24, 40),
    (70, 24, 40), (70, 40, 24), (SWAPPED_INPUT_ELEMENTS // 24 + 1, 24, 40)])
def test_swapped_product_equals_the_plain_one(rows, in_features, out_features, monkeypatch):
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, in_features)).astype(np.float32)
    layer = Linear(in_features, out_features)
    monkeypatch.setenv(SWAPPED_ROWS_ENV, "0,0")
    plain = Linear(in_features, out_features)
    for mine, theirs in zip(plain.get_parameters(), layer.get_parameters()):
        mine.set_data(Tensor(theirs.asnumpy()))
    assert (plain.matmul.low, plain.matmul.high) == (0, 0)
    assert (layer.matmul.low, layer.matmul.high) == SWAPPED_ROWS
    expected = x @ layer.weight.asnumpy().T + layer.bias.asnumpy()
    for cell in (layer, plain):
        out = run_in_graph_mode(cell, Tensor(x)).asnumpy()
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cell(Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)   # PyNative
    for got, want in zip(_grads(layer, x), _grads(plain, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_which_products_are_swapped():
    low, high = SWAPPED_ROWS
    # below the window, inside it, and past it while the input is small and the weight does not narrow it
    assert not takes_swapped_product(low - 1, 512, 512, low, high)
    assert takes_swapped_product(low, 512, 2048, low, high) and takes_swapped_product(high - 1, 512, 2048, low, high)
    assert takes_swapped_product(77, 1536, 512, low, high) and takes_swapped_product(77, 512, 512, low, high)
    assert not takes_swapped_product(77, 512, 2048, low, high)      # the MLP's c_proj narrows 2048 -> 512
    assert not takes_swapped_product(77, 768, 768, low, high)       # 77 x 768 inputs: the plain product is faster
    assert takes_swapped_product(50, 3072, 768, low, high)          # a batch-1 ViT-B/32 (50 tokens)
    assert not takes_swapped_product(SWAPPED_INPUT_ELEMENTS // 512 + 1, 512, 512, low, high)
    assert not takes_swapped_product(20, 512, 512, 0, 0) and not takes_swapped_product(77, 512, 512, 0, 0)


def test_the_window_is_a_setting(monkeypatch):
    monkeypatch.delenv(SWAPPED_ROWS_ENV, raising=False)
    assert swapped_rows() == SWAPPED_ROWS
    monkeypatch.setenv(SWAPPED_ROWS_ENV, "8,32")
    assert swapped_rows() == (8, 32) and (WeightMatMul().low, WeightMatMul().high) == (8, 32)
    monkeypatch.setenv(SWAPPED_ROWS_ENV, "sixteen")
    with pytest.raises(ConfigError, match=r"MINDRAM_SWAPPED_GEMM_ROWS='sixteen': expected two integers"):
        swapped_rows()


def test_dynamic_row_count_takes_the_plain_product():
    """With a dynamic row count the window cannot be tested when compiling: the plain product, correct values."""
    from mindspore import dtype as mstype
    layer = Linear(24, 40)
    layer.set_inputs(Tensor(shape=[None, 24], dtype=mstype.float32))
    for rows in (20, 70):
        x = np.random.default_rng(rows).standard_normal((rows, 24)).astype(np.float32)
        expected = x @ layer.weight.asnumpy().T + layer.bias.asnumpy()
        np.testing.assert_allclose(run_in_graph_mode(layer, Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-5)
