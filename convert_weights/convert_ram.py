#!/usr/bin/env python
"""Convert recognize-anything RAM / RAM++ weights to MindSpore (no torch needed).

python convert_weights/convert_ram.py --torch_path ram_plus_swin_large_14m.pth \
    --mindspore_path ram_plus_swin_l_384.safetensors --model_type ram_plus --vit swin_l
(.safetensors or .ckpt by suffix; a <stem>.yaml config is written beside; --model_name NAME checks a
catalog name instead; --caption_modules keeps RAM's captioning-only tag_encoder/text_decoder; an unrelated
<stem>.yaml is kept unless --overwrite; errors: one line, exit code 2, --debug for the traceback.)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindram.models.ram.convert import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
