"""``Permute(perm)(x)`` = ``x.transpose(perm)``: the C++ transpose kernel of :mod:`.kernels` for static-shape float32
inputs on CPU, else ``ops.transpose``.

The kernel exists for memory, not speed: MindSpore 2.10's CPU ``Transpose`` keeps the memory of its tensors for the
life of a compiled graph, so a ViT or Swin graph held every attention map it ever computed (Swin-L at 384 px:
2.5 GiB for one image; docs/performance.md "Memory"). The kernel's tensors are freed and reused like any other op's.
"""
from mindspore import nn, ops

from .kernels import kernel_input, transpose_primitive


class Permute(nn.Cell):
    """Reorders the axes of a tensor of rank ``len(perm)``."""

    def __init__(self, perm):
        super().__init__()
        self.perm = tuple(int(p) for p in perm)
        if sorted(self.perm) != list(range(len(self.perm))):
            raise ValueError(f"perm {self.perm} is not a permutation of 0..{len(self.perm) - 1}")
        found = transpose_primitive(self.perm)
        self.use_kernel = found is not None
        self.kernel, self.perm_tensor = found if found is not None else (None, None)

    def construct(self, x):
        if self.use_kernel and kernel_input(x):
            return self.kernel(x, self.perm_tensor)
        return ops.transpose(x, self.perm)

    def extend_repr(self):
        return f"perm={self.perm}"
