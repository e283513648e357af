"""Writers of tiny on-disk dataset fixtures for tests/unit/test_data.py (official layouts, a few KB each)."""
import io
import json
import pickle
import struct
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int = 0, size=(40, 30), fmt: str = "JPEG") -> Path:
    """A small random RGB image file (w, h = size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def make_flickr8k(root: Path, nested: bool = True) -> Dict[str, List[str]]:
    """Flickr8k layout with 4 images (train: a, b; dev: c; test: d); returns {image: captions}."""
    names = ["1000_a.jpg", "1001_b.jpg", "1002_c.jpg", "1003_d.jpg"]
    image_dir = root / "Flickr8k_Dataset" / ("Flickr8k_Dataset" if nested else "")
    text_dir = root / "Flickr8k_text"
    text_dir.mkdir(parents=True)
    captions = {}
    lines = []
    for i, name in enumerate(names):
        write_image(image_dir / name, seed=i)
        captions[name] = [f"caption {k} of image {name[5]}" for k in range(5)]
        # write the captions out of order: the parser must sort them by #k
        lines += [f"{name}#{k}\t{captions[name][k]}" for k in (4, 0, 1, 2, 3)]
    lines.append("1000_a.jpg.1#0\ta quirky entry of the official token file")
    (text_dir / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split, members in (("train", names[:2]), ("dev", names[2:3]), ("test", names[3:])):
        (text_dir / f"Flickr8k.{split}Images.txt").write_text("\n".join(members) + "\n", encoding="utf-8")
    return captions


def cifar_label_names() -> List[str]:
    return ["maple_tree", "apple", "aquarium_fish"] + [f"class_{i}" for i in range(3, 100)]


class Py2Pickler(pickle._Pickler):  # pylint: disable=protected-access
    """Writes ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), like the cPickle that wrote the
    official CIFAR files; with protocol 2 the result is what Python 2 produced for the same dict."""

    dispatch = pickle._Pickler.dispatch.copy()  # pylint: disable=protected-access

    def save_py2_str(self, obj):
        n = len(obj)
        header = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(header + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def dumps(obj, protocol) -> bytes:
    """``pickle.dumps``; protocol "py2" emulates Python 2's cPickle protocol 2 (str = bytes)."""
    if protocol != "py2":
        return pickle.dumps(obj, protocol=protocol)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def make_cifar100(root: Path, n_train: int = 6, n_test: int = 4, protocol=2) -> Dict[str, tuple]:
    """``cifar-100-python/{train,test,meta}`` written like the official files (numpy ``data``); ``train`` uses
    bytes keys (as seen with ``encoding='bytes'``), ``test``/``meta`` str keys (bytes with protocol "py2", as
    in the official Python-2 files). Returns {split: (data, labels)}."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 100, size=n)]
        labels[0] = 0
        if split == "train":
            obj = {b"filenames": [f"img_{i}.png".encode() for i in range(n)], b"batch_label": b"training batch",
                   b"fine_labels": labels, b"coarse_labels": [0] * n, b"data": data}
        else:
            obj = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": "testing batch",
                   "fine_labels": labels, "coarse_labels": [0] * n, "data": data}
        if protocol == "py2":
            obj = {k.encode() if isinstance(k, str) else k: v.encode() if isinstance(v, str) else v
                   for k, v in obj.items()}
        (d / split).write_bytes(dumps(obj, protocol))
        out[split] = (data, labels)
    meta = {"fine_label_names": cifar_label_names(), "coarse_label_names": [f"super_{i}" for i in range(20)]}
    if protocol == "py2":
        meta = {k.encode(): [n.encode() for n in v] for k, v in meta.items()}
    (d / "meta").write_bytes(dumps(meta, protocol))
    return out


class _Payload:
    """Pickles to ``os.system(command)`` — what a malicious dataset file would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os
        return os.system, (self.command,)


def make_malicious_cifar(root: Path, marker: Path) -> Path:
    """A CIFAR-100 directory whose ``test`` file runs ``touch marker`` when loaded with plain pickle."""
    make_cifar100(root)
    path = root / "cifar-100-python" / "test"
    obj = {"data": np.zeros((1, 3072), np.uint8), "fine_labels": [0], "x": _Payload(f"touch {marker}")}
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


def make_karpathy(root: Path) -> Dict[str, Path]:
    """coco-karpathy style train/test json with 3 images under ``root/val2014``."""
    for i in range(3):
        write_image(root / "val2014" / f"img{i}.jpg", seed=10 + i)
    train = [{"image": f"val2014/img{i}.jpg", "caption": f"train caption {i}.{k}", "image_id": f"coco_{i}"}
             for i in range(3) for k in range(2)]
    test = [{"image": f"val2014/img{i}.jpg", "caption": [f"test caption {i}.{k}" for k in range(5 + (i == 2))]}
            for i in range(3)]
    paths = {}
    for name, entries in (("train", train), ("test", test)):
        paths[name] = root / f"coco_karpathy_{name}.json"
        paths[name].write_text(json.dumps(entries), encoding="utf-8")
    return paths


def make_caption_table(root: Path, sep: str, suffix: str, rows: List[tuple]) -> Path:
    """A header + rows table (``filepath``/``title`` columns, plus an unrelated one)."""
    lines = [sep.join(["id", "filepath", "title"])]
    lines += [sep.join([str(i), path, caption]) for i, (path, caption) in enumerate(rows)]
    path = root / f"table{suffix}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
