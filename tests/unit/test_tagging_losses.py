"""AsymmetricLoss and the distillation loss against values computed by hand."""
import math

import mindspore as ms
import numpy as np
import pytest

from mindram.losses import AsymmetricLoss, DistillationL1Loss


def test_asymmetric_loss_by_hand():
    logits = np.array([[2.0, -1.0], [0.0, 3.0]], np.float32)
    targets = np.array([[1, 0], [0, 1]], np.float32)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = 0.0
    for x, y in zip(logits.ravel(), targets.ravel()):
        p = sig(x)
        p_neg = min(1 - p + 0.05, 1.0)
        if y:
            expected -= math.log(p) * (1 - p) ** 0          # gamma_pos 0
        else:
            expected -= math.log(p_neg) * (1 - p_neg) ** 7  # gamma_neg 7
    loss = AsymmetricLoss(gamma_neg=7, gamma_pos=0, clip=0.05)(ms.Tensor(logits), ms.Tensor(targets))
    assert float(loss.asnumpy()) == pytest.approx(expected, rel=1e-5)


def test_asymmetric_loss_focusing_weight_has_no_gradient():
    logits = ms.Tensor(np.array([[0.3, -0.2]], np.float32))
    targets = ms.Tensor(np.array([[1.0, 0.0]], np.float32))
    loss_fn = AsymmetricLoss(gamma_neg=4, gamma_pos=1, clip=0.0)
    grad = ms.grad(lambda x: loss_fn(x, targets))(logits).asnumpy()
    p = 1 / (1 + np.exp(-logits.asnumpy()))
    # positive: d/dx[-log(p)·(1-p)] with (1-p) constant = -(1-p)·(1-p); negative: d/dx[-log(1-p)·p^4] = p·p^4
    expected = np.array([[-(1 - p[0, 0]) ** 2, p[0, 1] ** 5]])
    np.testing.assert_allclose(grad, expected, rtol=1e-5)


def test_distillation_is_mean_absolute_error():
    student = ms.Tensor(np.array([[1.0, -2.0], [0.5, 0.0]], np.float32))
    teacher = ms.Tensor(np.array([[0.0, 0.0], [0.5, 1.0]], np.float32))
    assert float(DistillationL1Loss()(student, teacher).asnumpy()) == pytest.approx((1 + 2 + 0 + 1) / 4)
