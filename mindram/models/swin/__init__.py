"""Swin Transformer: the image encoder of RAM / RAM++ / Tag2Text (configuration, model, weight names)."""
from .configuration import StageLayout, SwinConfig
from .convert import (config_from_state_dict, convert_swin_state_dict, expected_shapes, is_swin_buffer,
                      to_torch_swin_state_dict)
from .layer_ids import swin_layer_id, swin_num_layer_ids
from .modeling import SwinTransformer

__all__ = ["StageLayout", "SwinConfig", "SwinTransformer", "config_from_state_dict", "convert_swin_state_dict",
           "expected_shapes", "is_swin_buffer", "swin_layer_id", "swin_num_layer_ids", "to_torch_swin_state_dict"]

from ...registry import MindFormerModuleType, MindFormerRegister  # noqa: E402

MindFormerRegister.register_cls(SwinTransformer, MindFormerModuleType.MODELS)
MindFormerRegister.register_cls(SwinConfig, MindFormerModuleType.CONFIG)
