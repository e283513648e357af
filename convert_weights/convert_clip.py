#!/usr/bin/env python
"""Convert PyTorch CLIP weights to a MindSpore checkpoint (no torch needed).

python convert_weights/convert_clip.py --torch_path ViT-B-32.pt --mindspore_path clip_vit_b_32.ckpt [--model_name clip_vit_b_32]
(.ckpt or .safetensors by suffix; a <stem>.yaml config is written beside, an unrelated one is kept unless
--overwrite; success is reported after the written file is re-read; errors: one line, exit code 2, --debug for
the traceback.)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindram.models.clip.convert import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
