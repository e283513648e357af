#!/usr/bin/env python
"""Export CLIP embeddings of images and/or texts to disk (sharded, atomic, resumable); optionally score
retrieval recall@K.

    python scripts/export_embeddings.py --model clip_vit_b_32 --images DIR_or_LIST --out OUT \\
        [--texts texts.txt | --captions captions.txt] [--evaluate] [--batch_size 64] \\
        [--backend onnxruntime] [--layout shards|npy]
    python scripts/export_embeddings.py --image_vectors DIR --text_vectors DIR     # recall@K of vectors on disk
    python scripts/export_embeddings.py --preprocess_only --model M --images DIR --captions FILE --out prep_data \
        [--input_format npy|bin]                                  # model inputs for ais_bench (the Ascend guide)

--images   a folder (searched recursively for image files) or a text file listing one image path per line
           (relative paths are resolved against the list file's folder). Image ids are the paths relative
           to the folder / as written in the list.
--texts    a text file, one text per line (ids: the line number from 0).
--captions image-caption pairs, one per line: ``image,caption`` (Flickr8k ``captions.txt``; a first line
           ``image,caption`` is a header) or ``image<TAB>caption`` (Flickr8k.token.txt; a ``#n`` suffix of the
           image name is dropped). Gives the texts and, with --evaluate, which image each caption belongs to
           (matched by the image id, else by file name).
--backend  mindspore (default) or onnxruntime: then --model is an export directory (python -m mindram.export).
--layout   shards (default; see mindram.embeddings.write_embeddings) or npy: one vector per file as in the
           Ascend offline guide, images/<image id>.npy and, for --captions, texts/<image stem>_<k>.npy (caption k
           of that image; --texts: texts/<line>.npy).
--image_vectors/--text_vectors  only evaluate: recall@K of two folders of vectors made anywhere (either layout;
           captions paired with images by the file names <stem>_<k> / <stem>; ais_bench's outputs <name>_0.npy
           are paired without the output index _0). A caption without its image or an image without a caption
           is an error naming them, unless --allow_unpaired; links leading out of a folder are skipped with a
           warning unless --follow_symlinks.
--preprocess_only  write the model inputs instead of vectors, the guide's openclip_preprocess.py step:
           OUT/images/<image stem>.npy float32 (3, S, S) and OUT/texts/<image stem>_<k>.npy int64 (L,) (--texts:
           texts/<line>.npy), flat, for `python -m ais_bench --input OUT/images ...`; --input_format bin writes raw
           .bin files instead (see mindram.embeddings.model_inputs). Resumable; --overwrite starts again.
Outputs go to OUT/images and OUT/texts (see mindram.embeddings.write_embeddings); re-running resumes.
The inputs are checked before the model loads; an error (a missing input, a malformed caption line, a config
or checkpoint error) is one line on stderr with exit code 2 (--debug shows the traceback).
"""
import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# light imports only: --help and usage errors answer before MindSpore is imported (main() imports the rest)
from mindram.embeddings.model_inputs import FILE_FORMATS, check_input_names, write_model_inputs  # noqa: E402
from mindram.errors import DataError  # noqa: E402
from mindram.utils.image_files import list_image_files  # noqa: E402
from mindram.utils.cli import add_debug_flag, configure_logging, run_cli  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def list_images(source):
    """``(paths, ids)`` of a folder (recursive) or a list file."""
    source = Path(source)
    if source.is_dir():
        paths = list_image_files(source, IMAGE_SUFFIXES)   # links leading out of the folder are skipped
        return paths, [p.relative_to(source).as_posix() for p in paths]
    if not source.is_file():
        raise DataError(f"--images {source}: no such folder or list file; give an image folder or a text file "
                        f"listing one image path per line")
    lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
    ids = [line for line in lines if line and not line.startswith("#")]
    return [Path(i) if Path(i).is_absolute() else source.parent / i for i in ids], ids


def read_captions(path):
    """``[(image name, caption)]`` from a Flickr8k-style CSV or TSV caption file."""
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        sep = "\t" if "\t" in line else ","
        if sep not in line:
            raise DataError(f"{path}:{number + 1}: expected 'image,caption' or 'image<TAB>caption', got {line!r}")
        image, caption = line.split(sep, 1)
        if number == 0 and (image.strip().lower(), caption.strip().lower()) == ("image", "caption"):
            continue
        pairs.append((re.sub(r"#\d+$", "", image.strip()), caption.strip()))
    return pairs


def read_texts(path):
    """The lines of a --texts file (one text per line)."""
    return Path(path).read_text(encoding="utf-8").splitlines()


def match_images(caption_images, image_ids):
    """Map caption image names to image ids: exact id first, else unique file name."""
    by_name = {}
    for image_id in image_ids:
        by_name.setdefault(Path(image_id).name, []).append(image_id)
    known = set(image_ids)
    out = []
    for name in caption_images:
        if name in known:
            out.append(name)
        else:
            candidates = by_name.get(Path(name).name, [])
            out.append(candidates[0] if len(candidates) == 1 else None)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", help="model name, directory or .ckpt (with --backend onnxruntime: export dir)")
    parser.add_argument("--backend", choices=("mindspore", "onnxruntime"), default="mindspore")
    parser.add_argument("--layout", choices=("shards", "npy"), default="shards", help="output layout")
    parser.add_argument("--image_vectors", help="evaluate only: folder of image vectors")
    parser.add_argument("--text_vectors", help="evaluate only: folder of caption vectors")
    parser.add_argument("--images", help="image folder or list file")
    texts = parser.add_mutually_exclusive_group()
    texts.add_argument("--texts", help="text file, one text per line")
    texts.add_argument("--captions", help="image,caption pairs (Flickr8k captions.txt or token file)")
    parser.add_argument("--out", help="output folder (OUT/images, OUT/texts)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--shard_size", type=int, default=4096)
    parser.add_argument("--num_workers", type=int, default=4, help="image decoding threads")
    parser.add_argument("--no_normalize", action="store_true", help="store raw (not L2-normalised) features")
    parser.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    parser.add_argument("--evaluate", action="store_true", help="print retrieval recall@K (needs --captions)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--preprocess_only", action="store_true",
                        help="write model inputs for ais_bench (OUT/images, OUT/texts) instead of vectors")
    parser.add_argument("--input_format", choices=FILE_FORMATS, default="npy", help="--preprocess_only: file format")
    parser.add_argument("--allow_unpaired", action="store_true",
                        help="score what pairs, leaving out captions without an image (default: an error)")
    parser.add_argument("--follow_symlinks", action="store_true",
                        help="--image_vectors/--text_vectors: read links leading out of the folder (default: skip)")
    args = add_debug_flag(parser).parse_args(argv)
    from mindram.embeddings import recall_at_k  # pylint: disable=import-outside-toplevel
    if args.image_vectors or args.text_vectors:
        if not (args.image_vectors and args.text_vectors):
            parser.error("--image_vectors and --text_vectors go together")
        return print_metrics(recall_at_k(args.image_vectors, args.text_vectors, ks=args.ks,
                                         allow_unpaired=args.allow_unpaired, follow_symlinks=args.follow_symlinks))
    if not args.model or not args.out:
        parser.error("--model and --out are required to export")
    if not args.images and not (args.texts or args.captions):
        parser.error("nothing to export: give --images and/or --texts/--captions")
    if args.evaluate and not (args.images and args.captions):
        parser.error("--evaluate needs --images and --captions")
    if args.preprocess_only and args.evaluate:
        parser.error("--preprocess_only writes inputs, not vectors: nothing to --evaluate")

    paths, image_ids = list_images(args.images) if args.images else ([], [])
    pairs = read_captions(args.captions) if args.captions else None
    lines = [c for _, c in pairs] if pairs else (read_texts(args.texts) if args.texts else [])
    text_names = caption_ids([image for image, _ in pairs], flat=True) if pairs else None
    if args.preprocess_only:  # the names are checked before the model loads
        check_input_names([Path(i).stem for i in image_ids], "image")
        check_input_names(text_names or [], "text")
    from mindram.backends import load_backend  # pylint: disable=import-outside-toplevel
    from mindram.embeddings import write_embeddings  # pylint: disable=import-outside-toplevel
    from mindram.pipeline import FeatureExtractionPipeline  # pylint: disable=import-outside-toplevel
    model = FeatureExtractionPipeline.load_model(load_backend(args.backend, args.model))
    out = Path(args.out)
    if args.preprocess_only:
        return preprocess(model, out, paths, image_ids, lines, text_names, args)
    common = dict(batch_size=args.batch_size, shard_size=args.shard_size, normalize=not args.no_normalize,
                  overwrite=args.overwrite, layout=args.layout)
    text_ids = caption_ids([image for image, _ in pairs]) if pairs and args.layout == "npy" else None
    if args.images:
        summary = write_embeddings(model, paths, out / "images", kind="image", ids=image_ids,
                                   num_workers=args.num_workers, **common)
        print(f"images: {summary['num_vectors']} vectors, {summary['num_errors']} skipped -> {out / 'images'}")
    if args.texts or pairs:
        summary = write_embeddings(model, lines, out / "texts", kind="text", ids=text_ids, **common)
        print(f"texts: {summary['num_vectors']} vectors, {summary['num_errors']} skipped -> {out / 'texts'}")
    if args.evaluate:
        if args.layout == "npy":  # ids are file names: caption <stem>_<k> belongs to image <stem>
            return print_metrics(recall_at_k(out / "images", out / "texts", ks=args.ks,
                                             allow_unpaired=args.allow_unpaired))
        matched = match_images([image for image, _ in pairs], image_ids)
        mapping = {str(i): image_id for i, image_id in enumerate(matched) if image_id is not None}
        return print_metrics(recall_at_k(out / "images", out / "texts", mapping, ks=args.ks,
                                         allow_unpaired=args.allow_unpaired))
    return None


def preprocess(model, out, paths, image_ids, lines, text_names, args):
    """``--preprocess_only``: the model inputs of the images and texts, named as the guide names them."""
    summary = write_model_inputs(model, out, images=paths, image_names=[Path(i).stem for i in image_ids],
                                 texts=lines, text_names=text_names, file_format=args.input_format,
                                 overwrite=args.overwrite, num_workers=args.num_workers)
    for kind, s in summary.items():
        print(f"{kind}: {s['num_written']} inputs written, {s['skipped_existing']} already there, "
              f"{s['num_errors']} skipped -> {s['out_dir']}")
    return summary


def caption_ids(caption_images, flat=False):
    """Ids of captions in the seeds' naming: ``<image stem>_<k>``, k counting the captions of each image
    (``flat``: the stem without the image's folders, as the flat folders of model inputs name it)."""
    seen, ids = {}, []
    for image in caption_images:
        stem = Path(image).stem if flat else Path(image).with_suffix("").as_posix()
        ids.append(f"{stem}_{seen.get(stem, 0)}")
        seen[stem] = seen.get(stem, 0) + 1
    return ids


def print_metrics(metrics):
    for name, value in metrics.items():
        print(f"{name}: {100 * value:.2f}")
    return metrics


def cli(argv=None):
    """Command-line entry: :func:`main` (which returns the metrics) with exit code 0."""
    main(argv)


if __name__ == "__main__":
    configure_logging()
    sys.exit(run_cli(cli, prog="export_embeddings.py"))
