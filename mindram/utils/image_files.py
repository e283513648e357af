"""Where images and user-given folders enter mindram: one pixel budget, regular files only, folders kept to.

* **Pixel budget** (:func:`max_image_pixels`, :func:`check_pixel_budget`): no image costs more than
  ``$MINDRAM_MAX_IMAGE_PIXELS`` pixels (default :data:`DEFAULT_MAX_IMAGE_PIXELS`, 25,000,000), neither as stored
  nor as resized by an image processor. The image processors (and so the pipelines, ``Trainer.predict``, the
  embedding writer and the training datasets) and the web app check it from the file's header, before any pixel
  is decoded or allocated; a caller may pass its own ``max_pixels``.
* **Regular files only** (:func:`open_regular_file`, :func:`read_image`, :func:`read_image_size`): the path is
  opened without blocking and checked with ``fstat`` on the open descriptor, so a FIFO, a device or a folder
  named like an image is a :class:`~mindram.errors.DataError` at once instead of a read that never returns.
* **Folders keep to themselves** (:func:`list_image_files`, :func:`leaves_folder`): a symbolic link inside a
  user-given folder that resolves outside it is skipped with one warning naming the link and its target.
"""
import errno
import logging
import os
import stat
from pathlib import Path

from PIL import Image, ImageOps

from ..errors import DataError
from .env import env_number
from .validation import check_positive_int

logger = logging.getLogger(__name__)

MAX_PIXELS_ENV = "MINDRAM_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 25_000_000   # a 24-megapixel photo passes, a 50-megapixel one is refused
BUDGET_HINT = (f"downscale it, or raise the budget with ${MAX_PIXELS_ENV} (or the processor's max_pixels) for "
               "images you trust")
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def max_image_pixels(max_pixels=None):
    """The pixel budget: ``max_pixels`` when given, else ``$MINDRAM_MAX_IMAGE_PIXELS``, else 25,000,000.
    ConfigError for a value that is not a positive int."""
    if max_pixels is None:
        return env_number(MAX_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS, meaning="pixels per image, width x height")
    return check_positive_int(max_pixels, "max_pixels")


def check_pixel_budget(width, height, what, max_pixels=None, stage="", hint=BUDGET_HINT):
    """DataError (one line naming ``what``, the size and the budget) when ``width x height`` is over the pixel
    budget (:func:`max_image_pixels` of ``max_pixels``). ``stage`` says which size it is (e.g. ``"resized to"``;
    empty: the image as stored)."""
    budget = max_image_pixels(max_pixels)
    pixels = int(width) * int(height)
    if pixels > budget:
        raise DataError(f"{what}: {stage + ' ' if stage else ''}{width}x{height} = {pixels / 1e6:.1f} megapixels, over "
                        f"the limit of {budget / 1e6:g} megapixels ({budget:,} pixels); {hint}")


def _file_kind(mode):
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def open_regular_file(path):
    """``path`` opened for binary reading if it is a regular file (symbolic links followed): FileNotFoundError when
    it does not exist, DataError naming it for a FIFO, device, socket or folder (found without blocking: opened
    non-blocking, checked on the descriptor, so it cannot be swapped between the check and the read)."""
    path_str = os.fspath(path)
    try:
        fd = os.open(path_str, os.O_RDONLY | getattr(os, "O_BINARY", 0) | _NONBLOCK)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "image file not found", path_str) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"{path_str} is {_file_kind(mode)}, not a regular file; images are read from regular "
                            f"files only")
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def decode_checked(image, what, check_size=None, apply_exif=False):
    """A lazily opened PIL ``image`` decoded after ``check_size(width, height)`` passed (default: the pixel
    budget), so nothing is allocated for a refused image; EXIF-transposed when ``apply_exif``; detached from its
    file. A decoding failure is a DataError naming ``what``."""
    (check_size or (lambda w, h: check_pixel_budget(w, h, what)))(image.width, image.height)
    try:
        image.load()
        out = ImageOps.exif_transpose(image) if apply_exif else image
        return out.copy() if out is image else out
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error... on corrupt data
        raise DataError(f"cannot read image file {what!r}: {type(e).__name__}: {e}") from e


def read_image(path, check_size=None, apply_exif=False):
    """The decoded PIL image of the regular file ``path`` (see :func:`open_regular_file`): its header is read,
    ``check_size(width, height)`` (default: the pixel budget) may refuse it, then its pixels are decoded.
    Missing: FileNotFoundError; not a regular file, undecodable or refused: DataError naming the file."""
    path_str = os.fspath(path)
    with open_regular_file(path_str) as f:
        try:
            image = Image.open(f)
        except Exception as e:  # UnidentifiedImageError, DecompressionBombError, OSError, SyntaxError...
            raise DataError(f"cannot read image file {path_str!r}: {type(e).__name__}: {e}") from e
        with image:
            return decode_checked(image, path_str, check_size, apply_exif)


def read_image_size(path):
    """``(width, height)`` of the regular file ``path`` from its header (nothing decoded); errors as
    :func:`read_image`, PIL's own (``UnidentifiedImageError``, ``DecompressionBombError``) left to the caller."""
    with open_regular_file(path) as f, Image.open(f) as image:
        return image.size


def leaves_folder(path, real_root):
    """The target of ``path`` when it is a symbolic link resolving outside the folder whose resolved path is
    ``real_root`` (or through one: its resolved path is outside), else None."""
    real = os.path.realpath(path)
    try:
        inside = os.path.commonpath([real_root, real]) == real_root
    except ValueError:  # another drive (Windows)
        inside = False
    return None if inside else real


def list_image_files(root, suffixes, within=None, follow_symlinks=False):
    """The regular files under the folder ``root`` (recursive) whose suffix is among ``suffixes`` (any case), as
    ``Path``s under ``root`` in sorted order. The listing does not leave ``within`` (default ``root``): a symbolic
    link (to a file or a folder) that resolves outside it is skipped with one warning naming it and its target;
    links to folders are not descended (what they point to inside is listed where it is). ``follow_symlinks``
    (for a folder you trust) lists links wherever they lead and enters linked folders, each real folder once (a
    link back to a parent does not loop). Entries with an image suffix that are not regular files (FIFOs,
    devices, broken links) are skipped with a warning."""
    root = Path(root)
    real_root = os.path.realpath(root if within is None else within)
    suffixes = tuple(s.lower() for s in suffixes)
    found, walked = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
        if follow_symlinks:
            walked.add(os.path.realpath(dirpath))
            dirnames[:] = [d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in walked]
        for name in dirnames:
            link = os.path.join(dirpath, name)
            target = leaves_folder(link, real_root) if not follow_symlinks and os.path.islink(link) else None
            if target is not None:
                logger.warning("skipping %s: a symbolic link to %s, outside the folder %s", link, target, real_root)
        for name in filenames:
            if os.path.splitext(name)[1].lower() not in suffixes:
                continue
            path = os.path.join(dirpath, name)
            target = leaves_folder(path, real_root) if not follow_symlinks and os.path.islink(path) else None
            if target is not None:
                logger.warning("skipping %s: a symbolic link to %s, outside the folder %s", path, target, real_root)
            elif not os.path.isfile(path):
                logger.warning("skipping %s: not a regular file", path)
            else:
                found.append(Path(path))
    return sorted(found)
