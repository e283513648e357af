"""``load_image`` as MindFormers' ``mindformers.tools.image_tools.load_image``: a path, an ``http(s)://`` URL,
a PIL image or an array → an RGB PIL image.

    from mindram.tools.image_tools import load_image
    img = load_image("https://example.org/sunflower.png")       # fetched with the standard library

A URL is read with ``urllib`` under a timeout (``timeout`` seconds, default ``$MINDRAM_IMAGE_TIMEOUT`` or
10) and a size cap (``$MINDRAM_IMAGE_MAX_BYTES``, default 64 MiB); any failure — offline, DNS, HTTP error,
timeout, not an image — is one :class:`~mindram.errors.DataError` naming the URL and the cause. The same
function serves every place that accepts images (pipelines, ``Trainer.predict``, image processors), so a
URL works wherever a path does. Every image, file or URL, is held to the pixel budget of
:mod:`mindram.utils.image_files` (``$MINDRAM_MAX_IMAGE_PIXELS``, default 25,000,000) from its header, before it is
decoded, and a path must be a regular file (a FIFO is a DataError, not a read that never returns).
"""
import io
import os
import socket
import urllib.error
import urllib.request
from http.client import HTTPException

import numpy as np
from PIL import Image

from ..errors import DataError
from ..utils.image_files import check_pixel_budget, decode_checked, read_image

URL_SCHEMES = ("http://", "https://")
USER_AGENT = "mindram-load-image/1"


def _timeout():
    return float(os.environ.get("MINDRAM_IMAGE_TIMEOUT", "10"))


def _max_bytes():
    return int(os.environ.get("MINDRAM_IMAGE_MAX_BYTES", str(64 << 20)))


def is_url(item):
    """Whether ``item`` is a string naming an ``http(s)://`` URL."""
    return isinstance(item, str) and item.strip().lower().startswith(URL_SCHEMES)


def fetch_url(url, timeout=None):
    """The bytes at ``url`` (``http``/``https``); :class:`DataError` naming the URL and the cause otherwise."""
    url = url.strip()
    timeout = _timeout() if timeout is None else float(timeout)
    limit = _max_bytes()
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(limit + 1)
    except urllib.error.HTTPError as e:
        raise DataError(f"cannot fetch image {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DataError(f"cannot fetch image {url}: {e.reason} (offline? pass a local file instead)") from None
    except (socket.timeout, TimeoutError):
        raise DataError(f"cannot fetch image {url}: no answer within {timeout:g} s "
                        "(set MINDRAM_IMAGE_TIMEOUT or pass a local file)") from None
    except (HTTPException, ConnectionError, ValueError) as e:
        raise DataError(f"cannot fetch image {url}: {type(e).__name__}: {e}") from None
    if len(data) > limit:
        raise DataError(f"cannot fetch image {url}: larger than {limit} bytes (MINDRAM_IMAGE_MAX_BYTES)")
    return data


def open_url(url, timeout=None, check_size=None):
    """The decoded PIL image at ``url`` (detached from the download buffer), once ``check_size(width, height)``
    (default: the pixel budget) accepted the size in its header."""
    data = fetch_url(url, timeout)
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... on non-image data
        raise DataError(f"{url}: the {len(data)} bytes fetched are not a readable image "
                        f"({type(e).__name__}: {e})") from None
    with im:
        return decode_checked(im, url, check_size)


def load_image(content, timeout=None):
    """An RGB PIL image from a path, an ``http(s)`` URL, a PIL image or an ``(H, W[, C])`` uint8 array.

    MindFormers' signature (``load_image(content, timeout=4)``); ``timeout`` applies to URLs. A missing file
    is ``FileNotFoundError``; unreadable data, a file that is not a regular file or an image over the pixel
    budget a :class:`DataError`; another type a ``TypeError``.
    """
    if is_url(content):
        image = open_url(content, timeout)
    elif isinstance(content, (str, os.PathLike)):
        image = read_image(content)
    elif isinstance(content, Image.Image):
        check_pixel_budget(content.width, content.height, "load_image: PIL image")
        image = content
    elif isinstance(content, np.ndarray):
        if content.dtype != np.uint8 or content.ndim not in (2, 3):
            raise DataError(f"load_image: expected a uint8 (H, W) or (H, W, C) array, got {content.dtype} "
                            f"{content.shape}")
        check_pixel_budget(content.shape[1], content.shape[0], f"load_image: array {content.shape}")
        image = Image.fromarray(content)
    else:
        raise TypeError(f"load_image: expected a path, an http(s) URL, a PIL image or a uint8 array, "
                        f"got {type(content).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")
