#!/usr/bin/env python
"""Write webdataset tar shards (open_clip's ``--train-data`` format) from an image folder or a caption table.

    python scripts/make_shards.py --csv captions.csv --output shards/ [--shard_size 10000]
    python scripts/make_shards.py --image_folder photos/ --output shards/ --caption_template "a photo of a {}."

Each sample is ``<key>.<image extension>`` (the original file's bytes, not re-encoded) + ``<key>.txt`` (its
caption), keys ``000000000, 000000001, ...`` in the source's order; shards are ``00000.tar, 00001.tar, ...``
(``shards/{00000..NNNNN}.tar``, printed at the end) and ``sizes.json`` holds their sample counts (read by
``mindram.data.WebDataset`` and open_clip). ``--csv``: a table with a header (``--image_key filepath
--caption_key title`` as open_clip; tab-separated for .tsv/.txt), image paths relative to the table's folder.
``--image_folder``: ``<class>/<image>`` sub-folders, the caption is ``--caption_template`` with the class name.
A missing or unreadable image is skipped and counted (a warning names it). Every file is written atomically;
an existing output folder with shards is refused unless ``--overwrite``. Errors: one line, exit code 2.
"""
import argparse
import io
import json
import logging
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from mindram.data import CaptionTable, ImageFolder  # noqa: E402
from mindram.errors import ConfigError, OutputExistsError  # noqa: E402
from mindram.utils.cli import add_debug_flag, configure_logging, run_cli  # noqa: E402
from mindram.utils.io import atomic_write  # noqa: E402

PROG = "make_shards.py"
logger = logging.getLogger("make_shards")


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="caption table (CSV/TSV with a header row)")
    source.add_argument("--image_folder", help="folder of <class>/<image> sub-folders")
    parser.add_argument("--output", required=True, help="folder for the shards and sizes.json")
    parser.add_argument("--shard_size", type=int, default=10000, help="samples per shard (default 10000)")
    parser.add_argument("--image_key", default="filepath", help="--csv: image path column (default filepath)")
    parser.add_argument("--caption_key", default="title", help="--csv: caption column (default title)")
    parser.add_argument("--sep", default=None, help="--csv: column separator (default: by file suffix)")
    parser.add_argument("--caption_template", default="a photo of a {}.", help="--image_folder: caption of a class")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --output")
    return add_debug_flag(parser)


def open_source(args):
    if args.csv:
        return CaptionTable(args.csv, image_key=args.image_key, caption_key=args.caption_key, sep=args.sep)
    return ImageFolder(args.image_folder, caption_template=args.caption_template)


def readable_image(path):
    """``(bytes, extension)`` of an image file that decodes, else None (logged)."""
    try:
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return data, Path(path).suffix.lower().lstrip(".").replace("jpeg", "jpg")
    except Exception as e:  # noqa: BLE001 - PIL raises many types on corrupt data
        logger.warning("skipping %s: %s: %s", path, type(e).__name__, e)
        return None


def add_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(source, output, shard_size):
    """Write the shards; return ``(sizes, skipped)``."""
    sizes, skipped, shard = {}, 0, []

    def flush():
        name = f"{len(sizes):05d}.tar"
        with atomic_write(output / name) as tmp, tarfile.open(tmp, "w") as tar:
            for key, data, ext, caption in shard:
                add_member(tar, f"{key}.{ext}", data)
                add_member(tar, f"{key}.txt", caption.encode("utf-8"))
        sizes[name] = len(shard)
        shard.clear()

    for index in tqdm(range(len(source)), desc="shards", unit="image"):
        record = source[index]
        found = readable_image(record.image)
        if found is None:
            skipped += 1
            continue
        caption = record.caption if isinstance(record.caption, str) else record.caption[0]
        shard.append((f"{index:09d}", found[0], found[1], caption))
        if len(shard) == shard_size:
            flush()
    if shard:
        flush()
    return sizes, skipped


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.shard_size < 1:
        raise ConfigError(f"--shard_size: expected >= 1, got {args.shard_size}")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: is a file, not a folder")
    existing = sorted(output.glob("*.tar")) if output.is_dir() else []
    if existing and not args.overwrite:
        raise OutputExistsError(f"--output {output} already holds {len(existing)} shard(s); pass --overwrite to "
                                f"replace them or choose another folder")
    source = open_source(args)
    output.mkdir(parents=True, exist_ok=True)
    for old in existing:
        old.unlink()
    sizes, skipped = write_shards(source, output, args.shard_size)
    if not sizes:
        raise ConfigError(f"no readable image in {args.csv or args.image_folder}: no shard written")
    with atomic_write(output / "sizes.json") as tmp:
        Path(tmp).write_text(json.dumps(sizes, indent=1, sort_keys=True), encoding="utf-8")
    total = sum(sizes.values())
    print(json.dumps({"urls": str(output / f"{{00000..{len(sizes) - 1:05d}}}.tar"), "shards": len(sizes),
                      "samples": total, "skipped": skipped}))
    return 0


if __name__ == "__main__":
    configure_logging()
    sys.exit(run_cli(main, prog=PROG))
