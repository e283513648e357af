"""ONNX graphs of CLIP's two towers, built from a :class:`~mindram.CLIPModel`'s cells and weights.

Signatures follow the Ascend offline-inference guide (the seeds' ONNX → OM flow):

* image tower: ``image`` float32 (N, 3, S, S) → ``image_embed`` float32 (N, D);
* text tower: ``text`` int64 (or int32) (N, L) token ids → ``text_embed`` float32 (N, D).

Outputs are the projected, *un-normalised* features of ``get_image_features``/``get_text_features``. ``N`` is
the symbolic ``batch`` with ``dynamic_batch``, else the fixed ``batch_size``.
"""
import numpy as np

from .onnx_builder import GraphBuilder

IMAGE_INPUT, IMAGE_OUTPUT = "image", "image_embed"
TEXT_INPUT, TEXT_OUTPUT = "text", "text_embed"
TEXT_DTYPES = ("int64", "int32")


def _batch_dim(dynamic_batch, batch_size):
    return "batch" if dynamic_batch else int(batch_size)


def image_tower_graph(visual, image_size, dynamic_batch=True, batch_size=1, producer_version=""):
    """``onnx.ModelProto`` of a ``VisionTransformer`` cell (``model.visual``) for square images of ``image_size``."""
    g = GraphBuilder("mindram_clip_image_encoder")
    tensor = g.onnx.TensorProto
    batch = _batch_dim(dynamic_batch, batch_size)
    image = g.add_input(IMAGE_INPUT, tensor.FLOAT, [batch, 3, image_size, image_size])
    conv, width, p = visual.conv1, visual.conv1.embed_dim, visual.conv1.patch_size
    # a P×P conv with stride P (what PatchEmbed computes as one GEMM; both drop incomplete trailing patches)
    x = g.op("Conv", [image, g.constant("visual.conv1.weight", conv.weight.asnumpy())],
             kernel_shape=[p, p], strides=[p, p])
    x = g.op("Transpose", [g.op("Reshape", [x, g.ints([0, width, -1])])], perm=[0, 2, 1])  # (N, grid², W)
    batch_of = g.op("Slice", [g.op("Shape", [image]), g.ints([0]), g.ints([1])])
    cls = g.op("Expand", [g.constant("visual.class_embedding", visual.class_embedding.asnumpy().reshape(1, 1, width)),
                          g.op("Concat", [batch_of, g.ints([1, width])], axis=0)])
    x = g.op("Add", [g.op("Concat", [cls, x], axis=1),
                     g.constant("visual.positional_embedding", visual.positional_embedding.asnumpy())])
    x = g.transformer(g.layer_norm(x, visual.ln_pre, "visual.ln_pre"), visual.transformer, "visual.transformer")
    pooled = g.layer_norm(g.op("Gather", [x, g.scalar(0, np.int64)], axis=1), visual.ln_post, "visual.ln_post")
    g.op("MatMul", [pooled, g.constant("visual.proj", visual.proj.asnumpy())], output=IMAGE_OUTPUT)
    g.add_output(IMAGE_OUTPUT, tensor.FLOAT, [batch, visual.proj.shape[1]])
    return g.model(producer_version)


def text_tower_graph(text, context_length, dynamic_batch=True, batch_size=1, ids_dtype="int64",
                     producer_version=""):
    """``onnx.ModelProto`` of a ``TextTransformer`` cell (``model.text``) for ``context_length`` token ids.

    The causal mask is a constant (L, L) additive mask; the EOT token (the largest id of each row, its first
    occurrence) is found by ``ArgMax`` and gathered per row before ``ln_final``, as the MindSpore tower does.
    """
    if ids_dtype not in TEXT_DTYPES:
        raise ValueError(f"ids_dtype must be one of {TEXT_DTYPES}, got {ids_dtype!r}")
    g = GraphBuilder("mindram_clip_text_encoder")
    tensor = g.onnx.TensorProto
    batch = _batch_dim(dynamic_batch, batch_size)
    elem = tensor.INT64 if ids_dtype == "int64" else tensor.INT32
    ids = g.add_input(TEXT_INPUT, elem, [batch, context_length])
    x = g.op("Gather", [g.constant("text.token_embedding.weight", text.token_embedding.weight.asnumpy()), ids],
             axis=0)
    x = g.op("Add", [x, g.constant("text.positional_embedding", text.positional_embedding.asnumpy()[:context_length])])
    mask = g.constant("text.attn_mask", np.triu(np.full((context_length, context_length), -np.inf, np.float32), 1))
    x = g.transformer(x, text.transformer, "text.transformer", mask=mask)
    eot = g.op("ArgMax", [g.op("Cast", [ids], to=tensor.INT32)], axis=-1, keepdims=1)  # (N, 1) int64
    pooled = g.layer_norm(g.op("GatherND", [x, eot], batch_dims=1), text.ln_final, "text.ln_final")
    g.op("MatMul", [pooled, g.constant("text.text_projection", text.text_projection.asnumpy())], output=TEXT_OUTPUT)
    g.add_output(TEXT_OUTPUT, tensor.FLOAT, [batch, text.text_projection.shape[1]])
    return g.model(producer_version)
