"""Swin Transformer: the image encoder of RAM / RAM++ / Tag2Text (configuration, model, weight names)."""
from ...utils.lazy import lazy_exports

_EXPORTS = {
    "StageLayout": ".configuration", "SwinConfig": ".configuration",
    "config_from_state_dict": ".convert", "convert_swin_state_dict": ".convert", "expected_shapes": ".convert",
    "is_swin_buffer": ".convert", "to_torch_swin_state_dict": ".convert",
    "swin_layer_id": ".layer_ids", "swin_num_layer_ids": ".layer_ids",
    "SwinTransformer": ".modeling",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["StageLayout", "SwinConfig", "SwinTransformer", "config_from_state_dict", "convert_swin_state_dict",
           "expected_shapes", "is_swin_buffer", "swin_layer_id", "swin_num_layer_ids", "to_torch_swin_state_dict"]


def register():
    """Register the family's buildable classes (the registry calls this before its first lookup)."""
    from ...registry import MindFormerModuleType, MindFormerRegister  # pylint: disable=import-outside-toplevel
    MindFormerRegister.register_cls(__getattr__("SwinTransformer"), MindFormerModuleType.MODELS)
    MindFormerRegister.register_cls(__getattr__("SwinConfig"), MindFormerModuleType.CONFIG)
