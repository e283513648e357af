"""Model families of mindram."""
from ..utils.lazy import lazy_exports

_EXPORTS = {
    "CLIPConfig": ".clip", "CLIPImageProcessor": ".clip", "CLIPModel": ".clip", "CLIPTokenizer": ".clip",
    "tokenize": ".clip",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["CLIPConfig", "CLIPImageProcessor", "CLIPModel", "CLIPTokenizer", "tokenize"]
