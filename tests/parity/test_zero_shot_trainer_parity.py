"""Trainer zero-shot evaluation on a converted open_clip model equals open_clip's own zero-shot code
(same images, classes and templates): identical per-image predictions and top-1."""
import numpy as np
import pytest
import torch
from PIL import Image

import mindram
from mindram.models.clip.convert import convert_state_dict
from tests.parity.clip_reference import reference_model

skimage_data = pytest.importorskip("skimage.data")
PHOTOS = {"astronaut": "astronaut", "coffee": "coffee", "chelsea": "cat", "rocket": "rocket",
          "camera": "camera", "horse": "horse"}
TEMPLATES = ["a photo of a {}.", "a blurry photo of the {}."]


def make_folder(root):
    """ImageFolder layout: one class folder per photo (plus a flipped copy), labels = sorted folder order."""
    for name, label in PHOTOS.items():
        array = getattr(skimage_data, name)()
        folder = root / label
        folder.mkdir(parents=True)
        Image.fromarray(array).save(folder / f"{name}.png")
        Image.fromarray(np.ascontiguousarray(array[:, ::-1])).save(folder / f"{name}_flip.jpg")
    return root


def test_trainer_zero_shot_matches_open_clip(tmp_path):
    import open_clip
    ref = reference_model("ViT-B-32")
    model = mindram.CLIPModel(mindram.CLIPConfig.from_pretrained("clip_vit_b_32.laion2b_s34b_b79k"))
    model.load_weights(convert_state_dict({k: v.numpy() for k, v in ref.state_dict().items()}))
    model.save_pretrained(tmp_path / "model")
    folder = make_folder(tmp_path / "images")

    trainer = mindram.Trainer(task="zero_shot_image_classification", model=tmp_path / "model",
                              overrides={"output_dir": str(tmp_path / "out"),
                                         "eval_dataset.data_loader": {"type": "ImageFolder",
                                                                      "dataset_dir": str(folder)},
                                         "zero_shot.templates": TEMPLATES, "runner_config.eval_batch_size": 4,
                                         "runner_config.num_workers": 1})
    metrics = trainer.evaluate()

    # open_clip's own zero-shot path on the same files
    classnames = sorted(PHOTOS.values())
    preprocess = open_clip.image_transform(224, is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: (p.parent.name, p.name))
    labels = np.array([classnames.index(p.parent.name) for p in files])
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(ref, tokenizer=tokenizer, classnames=classnames,
                                                          templates=TEMPLATES, num_classes_per_batch=10,
                                                          device="cpu", use_tqdm=False)
        images = torch.stack([preprocess(Image.open(p)) for p in files])
        features = torch.nn.functional.normalize(ref.encode_image(images), dim=-1)
        logits = (100.0 * features @ classifier).numpy()
    ref_top1 = float((logits.argmax(1) == labels).mean())
    assert metrics["num_images"] == len(files) == 12
    assert metrics["zero_shot_top1"] == pytest.approx(ref_top1, abs=1e-9)
    # and per image: the pipeline the trainer uses gives open_clip's ranking
    clf = mindram.pipeline("zero_shot_image_classification", model=trainer.model, candidate_labels=classnames,
                           hypothesis_template=TEMPLATES[0])
    ours = [row[0]["label"] for row in clf([str(p) for p in files])]
    with torch.no_grad():
        single = open_clip.build_zero_shot_classifier(ref, tokenizer=tokenizer, classnames=classnames,
                                                      templates=TEMPLATES[:1], device="cpu", use_tqdm=False)
        theirs = [classnames[i] for i in (features @ single).argmax(1).tolist()]
    assert ours == theirs
