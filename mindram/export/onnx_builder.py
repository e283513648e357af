"""An ONNX graph written node by node from mindram's layers and their weights (``onnx.helper``).

MindSpore 2.10's ONNX exporter has no ``Erf`` (exact GELU) and cannot export mindram's CPU kernels, so
the graph is built here from the module structure instead: every mindram layer maps onto standard ONNX
operators (opset 17) with the same numerics —

* ``Linear`` → ``MatMul`` with the transposed weight + ``Add`` of the bias;
* ``LayerNorm`` → ``LayerNormalization`` (opset 17) with the layer's epsilon;
* exact ``GELU`` → ``0.5·x·(1 + Erf(x/√2))``; ``QuickGELU`` → ``x·Sigmoid(1.702·x)``; ``ReLU`` → ``Relu``;
* ``MultiheadAttention`` → one packed projection, ``Split`` into q/k/v, heads by ``Reshape``/``Transpose``,
  scaled dot products, an optional additive mask, ``Softmax`` and the output projection;
* ``Transformer`` → its residual blocks in order.

Weights become initializers named after the mindram parameters, so a graph can be checked against its
checkpoint name by name.
"""
import math

import numpy as np

from ..errors import ConfigError
from .optional import require

OPSET = 17




class GraphBuilder:
    """Collects nodes, initializers, inputs and outputs; :meth:`model` returns the ``onnx.ModelProto``."""

    def __init__(self, name):
        self.onnx = require("onnx", "onnx>=1.14", "ONNX export")
        self.name = name
        self.nodes, self.initializers, self.inputs, self.outputs = [], [], [], []
        self._names = set()
        self._counter = 0

    # -- names and tensors ----------------------------------------------------------------------------------
    def fresh(self, hint):
        """A new unique value name derived from ``hint``."""
        self._counter += 1
        return f"{hint}_{self._counter}"

    def constant(self, name, array):
        """An initializer ``name`` holding ``array`` (float64 is stored as float32); returns its name."""
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        if name in self._names:
            raise ValueError(f"duplicate initializer name {name!r}")
        self._names.add(name)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into 1-d)
            array = array.copy(order="C")
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def scalar(self, value, dtype=np.float32):
        return self.constant(self.fresh("const"), np.asarray(value, dtype))

    def ints(self, values):
        return self.constant(self.fresh("shape"), np.asarray(values, np.int64))

    def add_input(self, name, elem_type, shape):
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def add_output(self, name, elem_type, shape):
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def op(self, op_type, inputs, output=None, **attrs):
        """Append one node; returns its (single) output name."""
        output = output or self.fresh(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def model(self, producer_version=""):
        onnx = self.onnx
        graph = onnx.helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                       producer_name="mindram", producer_version=producer_version)
        model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime >= 1.14 and ATC
        return model

    # -- mindram layers --------------------------------------------------------------------------------------
    def linear(self, x, weight, bias, name):
        """``x @ weight.T + bias`` for a torch-layout (out, in) ``weight``."""
        y = self.op("MatMul", [x, self.constant(f"{name}.weight_t", np.asarray(weight).T)])
        return y if bias is None else self.op("Add", [y, self.constant(f"{name}.bias", bias)])

    def linear_cell(self, x, cell, name):
        bias = cell.bias.asnumpy() if getattr(cell, "has_bias", True) and cell.bias is not None else None
        return self.linear(x, cell.weight.asnumpy(), bias, name)

    def layer_norm(self, x, cell, name):
        """``LayerNormalization`` over the last axis with the cell's weight, bias and epsilon."""
        return self.op("LayerNormalization", [x, self.constant(f"{name}.weight", cell.weight.asnumpy()),
                                              self.constant(f"{name}.bias", cell.bias.asnumpy())],
                       axis=-1, epsilon=float(cell.eps))

    def activation(self, x, cell):
        """The activation ``cell`` (``GELU``, ``QuickGELU`` or ``ReLU`` of :mod:`mindram.layers.activation`)."""
        kind = type(cell).__name__
        if kind == "GELU":
            erf = self.op("Erf", [self.op("Mul", [x, self.scalar(1.0 / math.sqrt(2.0))])])
            return self.op("Mul", [self.op("Mul", [x, self.scalar(0.5)]), self.op("Add", [erf, self.scalar(1.0)])])
        if kind == "QuickGELU":
            return self.op("Mul", [x, self.op("Sigmoid", [self.op("Mul", [x, self.scalar(1.702)])])])
        if kind == "ReLU":
            return self.op("Relu", [x])
        raise ConfigError(f"ONNX export: no ONNX form for the activation {kind}; expected GELU, QuickGELU or ReLU")

    def attention(self, x, cell, name, mask=None):
        """Self-attention of a ``MultiheadAttention`` cell over ``x`` (N, L, C); ``mask``: an additive (L, L)."""
        dim, heads, head_dim = cell.dim, cell.num_heads, cell.head_dim
        qkv = self.linear(x, cell.in_proj_weight.asnumpy(), cell.in_proj_bias.asnumpy(), f"{name}.in_proj")
        parts = [self.fresh(f"{name}.{p}") for p in "qkv"]
        self.nodes.append(self.onnx.helper.make_node("Split", [qkv, self.ints([dim] * 3)], parts, axis=-1))
        head_shape = self.ints([0, 0, heads, head_dim])  # 0: copy the batch and length dimensions
        q, k, v = (self.op("Reshape", [p, head_shape]) for p in parts)
        q = self.op("Mul", [self.op("Transpose", [q], perm=[0, 2, 1, 3]), self.scalar(cell.scale)])
        k = self.op("Transpose", [k], perm=[0, 2, 3, 1])
        v = self.op("Transpose", [v], perm=[0, 2, 1, 3])
        scores = self.op("MatMul", [q, k])
        if mask is not None:
            scores = self.op("Add", [scores, mask])
        out = self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])
        out = self.op("Reshape", [self.op("Transpose", [out], perm=[0, 2, 1, 3]), self.ints([0, 0, dim])])
        return self.linear_cell(out, cell.out_proj, f"{name}.out_proj")

    def transformer(self, x, cell, name, mask=None):
        """The residual blocks of a ``Transformer`` cell: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""
        for i, block in enumerate(cell.resblocks):
            prefix = f"{name}.resblocks.{i}"
            x = self.op("Add", [x, self.attention(self.layer_norm(x, block.ln_1, f"{prefix}.ln_1"), block.attn,
                                                  f"{prefix}.attn", mask)])
            hidden = self.linear_cell(self.layer_norm(x, block.ln_2, f"{prefix}.ln_2"), block.mlp.c_fc,
                                      f"{prefix}.mlp.c_fc")
            x = self.op("Add", [x, self.linear_cell(self.activation(hidden, block.mlp.act), block.mlp.c_proj,
                                                    f"{prefix}.mlp.c_proj")])
        return x
