"""TrainStep's gradient clipping is torch's ``clip_grad_norm_`` (coefficient max_norm / (norm + 1e-6), at most 1)."""
import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import nn

from mindram.layers.kernels import kernel_library, square_sum_primitive
from mindram.trainer.train_step import TrainStep, clip_by_global_norm
from mindram.utils.graph import run_in_graph_mode


def random_grads(seed, scale):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * scale).astype(np.float32) for shape in ((7, 5), (5,), (3, 4, 2), (1,))]


class Clip(nn.Cell):
    def __init__(self, max_norm, kernel):
        super().__init__()
        self.max_norm = max_norm
        self.kernel = kernel

    def construct(self, *grads):
        return clip_by_global_norm(grads, self.max_norm, self.kernel)


@pytest.mark.parametrize("use_kernel", [True, False], ids=["square-sum-kernel", "built-in"])
@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0], ids=["below", "near", "above"])
def test_clip_by_global_norm_equals_torch(scale, use_kernel):
    grads = random_grads(0, scale)
    tensors = [torch.from_numpy(g.copy()).requires_grad_() for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_norm_(tensors, 1.0)
    kernel = square_sum_primitive() if use_kernel else None
    if use_kernel and kernel is None:
        pytest.skip("C++ kernels unavailable (no compiler or disabled)")
    clipped = run_in_graph_mode(Clip(1.0, kernel), *[ms.Tensor(g) for g in grads])
    for ours, t in zip(clipped, tensors):
        np.testing.assert_allclose(ours.asnumpy(), t.grad.numpy(), rtol=2e-6, atol=1e-9)


class Regression(nn.Cell):
    """Squared error of a two-layer net: a loss with gradients of every shape kind (matrix, bias)."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def construct(self, x, y):
        return ((self.layers(x) - y) ** 2).sum()


def test_train_step_clips_like_torch():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal((6, 3)).astype(np.float32)
    w1, b1 = rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    w2, b2 = rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    ours = nn.SequentialCell([nn.Dense(4, 8, activation="tanh"), nn.Dense(8, 3)])
    for param, value in zip(ours.trainable_params(), (w1, b1, w2, b2)):
        param.set_data(ms.Tensor(value))
    step = TrainStep(Regression(ours), nn.SGD(ours.trainable_params(), learning_rate=0.1), max_grad_norm=0.5)
    assert (step.square_sum is None) == (kernel_library() is None)   # the kernel path wherever kernels exist
    loss = run_in_graph_mode(step, ms.Tensor(x), ms.Tensor(y))

    ref = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for param, value in zip(ref.parameters(), (w1, b1, w2, b2)):
            param.copy_(torch.from_numpy(value))
    ref_loss = ((ref(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).sum()
    ref_loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    assert norm > 0.5   # the step did clip
    torch.optim.SGD(ref.parameters(), lr=0.1).step()
    assert abs(float(loss.asnumpy()) - ref_loss.item()) <= 1e-4 * abs(ref_loss.item())
    for param, ref_param in zip(ours.trainable_params(), ref.parameters()):
        np.testing.assert_allclose(param.asnumpy(), ref_param.detach().numpy(), rtol=1e-5, atol=1e-6)
