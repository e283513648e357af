"""Token embedding with torch's parameter name (``weight``), a plain row gather."""
from ..utils.random import normal_parameter
from mindspore import nn, ops


class Embedding(nn.Cell):
    """(…) int ids → (…, dim) rows of ``weight`` (num_embeddings, dim)."""

    def __init__(self, num_embeddings, embedding_dim, std=0.02):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.weight = normal_parameter((self.num_embeddings, self.embedding_dim), std, name="weight")

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)

    def extend_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"
