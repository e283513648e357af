"""The model each pipeline loads when none is given (MindFormers' default per task); plain names, so that a
command can print them in its help without importing a model."""
DEFAULT_CLIP = "clip_vit_b_32"            # zero_shot_image_classification, feature_extraction
DEFAULT_TAGGER = "ram_plus_swin_l_384"    # image_tagging
