"""Checkpoint readers/converters of mindram."""
from mindram.checkpoint.torch_reader import (
    ScriptObject,
    load_safetensors,
    load_torch_object,
    load_torch_state_dict,
    script_state_dict,
)

__all__ = ["ScriptObject", "load_safetensors", "load_torch_object", "load_torch_state_dict", "script_state_dict"]
