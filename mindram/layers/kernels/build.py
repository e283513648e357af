"""Build-at-first-use and cache of the C++ kernels in ``mindram_kernels.cc``.

The shared library is compiled with g++ into ``$MINDRAM_HOME/kernels/<key>/`` where ``key`` hashes
the source text, the compiler flags, the compiler's version and the CPU's feature flags, so a
``-march=native`` binary is never loaded on a CPU it was not built for. Compilation writes to a
temporary name and is renamed into place, so concurrent builds (two processes, two threads) are
safe: the last rename wins and both results are identical.

When ``$MINDRAM_HOME`` cannot be written (and holds no library for this key), the library is built
in the private per-user folder ``<tempdir>/mindram-kernels-<uid>/<key>/`` instead (logged once). A
library that fails its self-test is deleted and a ``SELF_TEST_FAILED`` note with the reason is left
in its folder, so later processes fall back at once instead of rebuilding and re-rejecting it
(delete the note to try again).

This module does not use MindSpore; :func:`kernel_library` returns ``None`` (after logging one warning)
when kernels are disabled (``MINDRAM_DISABLE_KERNELS=1``), no compiler is found, the build fails or
the built library gives wrong numbers, and callers then use MindSpore's built-in ops.
"""
import ctypes
import hashlib
import logging
import math
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

from ...utils.io import atomic_write, mindram_home

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("mindram_kernels.cc")
LIB_NAME = "libmindram_kernels.so"
FAILED_NOTE = "SELF_TEST_FAILED"
# No -ffast-math: its -ffinite-math-only lets GCC drop NaN handling (NaN inputs came out as 0).
# FMA contraction is allowed: it only removes roundings and made GELU 1.55x faster.
# No -fopenmp: threads are std::threads started per call (see the .cc), nothing spins afterwards.
CXXFLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast",
            "-fopenmp-simd", "-pthread", "-shared", "-fPIC", "-std=c++17")
DISABLE_ENV = "MINDRAM_DISABLE_KERNELS"
BUILD_TIMEOUT_S = 180

_lock = threading.Lock()


def _new_state():
    """The per-process build result: nothing built yet, nothing logged yet."""
    return {"done": False, "path": None, "compiled": False, "logged": set()}


_state = _new_state()


def kernels_disabled():
    """True when ``MINDRAM_DISABLE_KERNELS`` is set to a true value (1/true/yes/on)."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _compiler():
    """Path of the C++ compiler ($CXX, else g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def _compiler_version(cxx):
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip()


def _cpu_signature():
    """CPU model and feature flags (from /proc/cpuinfo, else the platform's description)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() + platform.machine()
    keep = ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part")
    lines = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip()
             for ln in text.splitlines() if ":" in ln and ln.split(":", 1)[0].strip() in keep}
    return "\n".join(f"{k}={lines[k]}" for k in sorted(lines)) + "\n" + platform.machine()


def cache_key(cxx):
    """Hex key of the source text, flags, compiler version and CPU flags."""
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(CXXFLAGS).encode(), _compiler_version(cxx).encode(),
                 _cpu_signature().encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:24]


def _compile(cxx, target):
    """Compile SOURCE to ``target`` via a temporary file in the same folder and an atomic rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *CXXFLAGS, str(SOURCE), "-o", tmp], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _call(lib, name, arrays):
    """Call an aot entry point directly on numpy arrays (self-test helper)."""
    n = len(arrays)
    params = (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays])
    ndims = (ctypes.c_int * n)(*[a.ndim for a in arrays])
    dims = [(ctypes.c_int64 * max(a.ndim, 1))(*a.shape) for a in arrays]
    shapes = (ctypes.POINTER(ctypes.c_int64) * n)(*[ctypes.cast(d, ctypes.POINTER(ctypes.c_int64))
                                                    for d in dims])
    dtypes = (ctypes.c_char_p * n)(*[a.dtype.name.encode() for a in arrays])
    return getattr(lib, name)(n, params, ndims, shapes, dtypes, None, None)


def self_test(path):
    """Load the library with ctypes and check every kernel on a few values; raise on mismatch."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    lib = ctypes.CDLL(str(path))
    x = np.array([-6.0, -1.5, -0.25, 0.0, 0.5, 1.0, 3.0, 9.0], np.float32)
    y = np.empty_like(x)
    ref = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.astype(np.float64)])
    if _call(lib, "MindramGelu", [x, y]) != 0 or np.abs(y - ref).max() > 1e-6:
        raise RuntimeError(f"GELU self-test failed: {y} vs {ref}")
    xs = np.linspace(-2.0, 3.0, 24, dtype=np.float32).reshape(3, 8)
    w, b = np.linspace(0.5, 1.5, 8, dtype=np.float32), np.linspace(-1, 1, 8, dtype=np.float32)
    eps, out = np.array([1e-5], np.float32), np.empty_like(xs)
    xd = xs.astype(np.float64)
    mu, var = xd.mean(-1, keepdims=True), xd.var(-1, keepdims=True)
    ref = (xd - mu) / np.sqrt(var + 1e-5) * w + b
    if _call(lib, "MindramLayerNorm", [xs, w, b, eps, out]) != 0 or np.abs(out - ref).max() > 2e-6:
        raise RuntimeError(f"LayerNorm self-test failed: {out} vs {ref}")
    dout = np.linspace(1.0, -2.0, x.size, dtype=np.float32)
    dx = np.empty_like(x)
    ref = dout * np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) + v * math.exp(-0.5 * v * v) /
                           math.sqrt(2.0 * math.pi) for v in x.astype(np.float64)])
    if _call(lib, "MindramGeluGrad", [x, dout, dx]) != 0 or np.abs(dx - ref).max() > 1e-6:
        raise RuntimeError(f"GELU gradient self-test failed: {dx} vs {ref}")
    g = np.cos(np.arange(xs.size, dtype=np.float32)).reshape(xs.shape)
    dxs, dw, db = np.empty_like(xs), np.empty_like(w), np.empty_like(b)
    xhat, gw = (xd - mu) / np.sqrt(var + 1e-5), g * w
    ref_dx = (gw - gw.mean(-1, keepdims=True) - xhat * (gw * xhat).mean(-1, keepdims=True)) / np.sqrt(var + 1e-5)
    if (_call(lib, "MindramLayerNormGrad", [xs, w, g, eps, dxs, dw, db]) != 0 or np.abs(dxs - ref_dx).max() > 2e-6
            or np.abs(dw - (g * xhat).sum(0)).max() > 2e-6 or np.abs(db - g.sum(0)).max() > 2e-6):
        raise RuntimeError(f"LayerNorm gradient self-test failed: {dxs}, {dw}, {db}")
    added, bias_grad = np.empty_like(xs), np.empty_like(w)
    if (_call(lib, "MindramBiasAdd", [xs, w, added]) != 0 or _call(lib, "MindramBiasGrad", [g, bias_grad]) != 0
            or np.abs(added - (xs + w)).max() > 0 or np.abs(bias_grad - g.astype(np.float64).sum(0)).max() > 1e-6):
        raise RuntimeError(f"bias self-test failed: {added}, {bias_grad}")
    square_sum = np.empty(1, np.float32)
    if (_call(lib, "MindramSquareSum", [g, square_sum]) != 0
            or abs(float(square_sum[0]) - float((g.astype(np.float64) ** 2).sum())) > 1e-5):
        raise RuntimeError(f"square-sum self-test failed: {square_sum}")
    cube = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    for perm in ((0, 2, 1, 3), (3, 1, 0, 2)):
        moved = np.empty(cube.transpose(perm).shape, np.float32)
        if (_call(lib, "MindramTranspose", [cube, np.array(perm, np.int64), moved]) != 0
                or not np.array_equal(moved, cube.transpose(perm))):
            raise RuntimeError(f"transpose self-test failed for perm {perm}")
    _self_test_attention(lib, np)


def attention_reference(qkv, heads, causal=False, np=None, scale=None, bias=None, mask=None):
    """float64 ``softmax(scale q k^T [+ bias[h]] [+ mask[b % G]] [+ causal mask]) v`` of a packed (B, N, 3C) ``qkv``,
    heads merged back (``scale`` defaults to 1/sqrt(C/H); ``bias`` (H, N, N), ``mask`` (G, N, N)): what the attention
    kernels compute."""
    if np is None:
        import numpy as np  # pylint: disable=import-outside-toplevel,redefined-outer-name
    batch, length, width = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(0, 2, 1, 3).astype(np.float64)
               for t in np.split(qkv, 3, axis=-1))
    scale = 1.0 / math.sqrt(width // heads) if scale is None else scale
    scores = (q * np.float32(scale)) @ k.transpose(0, 1, 3, 2)
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        groups = mask.shape[0]
        scores = (scores.reshape(batch // groups, groups, heads, length, length)
                  + mask[:, None]).reshape(scores.shape)
    if causal:
        scores = np.where(np.triu(np.ones((length, length), bool), 1), -np.inf, scores)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)


def _self_test_attention(lib, np):
    # 2 x 19 tokens, 3 heads of 20: more queries than a block, keys and head width off the register tiles
    qkv = np.sin(np.arange(2 * 19 * 180, dtype=np.float32) * 0.37).reshape(2, 19, 180) * 2
    scale = np.full(3, 0.3, np.float32)
    bias = np.cos(np.arange(3 * 19 * 19, dtype=np.float32)).reshape(3, 19, 19)
    mask = np.where(np.arange(2 * 19 * 19).reshape(2, 19, 19) % 5 == 0, -100.0, 0.0).astype(np.float32)
    for name, causal, extra in (("MindramAttention", False, ()), ("MindramCausalAttention", True, ()),
                                ("MindramBiasedAttention", False, (bias,)),
                                ("MindramMaskedAttention", False, (bias, mask))):
        out = np.empty((2, 19, 60), np.float32)
        ref = attention_reference(qkv, 3, causal, np, 0.3, *extra)
        if _call(lib, name, [qkv, scale, *extra, out]) != 0 or np.abs(out - ref).max() > 1e-5:
            raise RuntimeError(f"{name} self-test failed")
        if not extra and _attention_grad_error(lib, name + "Grad", qkv, scale, out, causal, np) > 1e-4:
            raise RuntimeError(f"{name}Grad self-test failed")


def _attention_grad_error(lib, name, qkv, scale, out, causal, np):
    """Largest |error| of the attention gradient kernel ``name`` against central differences of the float64
    reference, on the sum of the output times a fixed weight; inf if the kernel fails."""
    weight = np.cos(np.arange(out.size, dtype=np.float32)).reshape(out.shape)
    dqkv = np.empty_like(qkv)
    if _call(lib, name, [qkv, scale, out, weight, dqkv]) != 0:
        return float("inf")
    qkv64, step, worst = qkv.astype(np.float64), 1e-6, 0.0
    for index in ((0, 0, 0), (1, 7, 70), (1, 18, 179), (0, 3, 125)):   # a q, a k and two v entries
        plus, minus = qkv64.copy(), qkv64.copy()
        plus[index] += step
        minus[index] -= step
        numeric = ((attention_reference(plus, 3, causal, np, float(scale[0]))
                    - attention_reference(minus, 3, causal, np, float(scale[0]))) * weight).sum() / (2 * step)
        worst = max(worst, abs(numeric - float(dqkv[index])))
    return worst


def _writable(folder):
    """True if ``folder`` exists or can be created, and a file can be created in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=str(folder))
        os.close(fd)
        os.remove(probe)
        return True
    except OSError:
        return False


def private_temp_dir():
    """``<tempdir>/mindram-kernels-<uid>``, created with mode 0700; refused unless this user owns it alone."""
    folder = Path(tempfile.gettempdir()) / f"mindram-kernels-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise RuntimeError(f"{folder} is not a private directory of this user (owner uid {info.st_uid}, mode "
                           f"{stat.filemode(info.st_mode)}); remove it or set $MINDRAM_HOME to a writable directory")
    return folder


def _cache_folder(key):
    """Folder of the library for ``key``: under $MINDRAM_HOME, or the private temp folder if that is unwritable."""
    folder = mindram_home() / "kernels" / key
    if (folder / LIB_NAME).is_file() or (folder / FAILED_NOTE).is_file() or _writable(folder):
        return folder
    fallback = private_temp_dir() / key
    log_once("temp_dir", logging.WARNING, f"$MINDRAM_HOME {mindram_home()} is not writable; the mindram "
             f"kernels are built in {fallback} instead (set $MINDRAM_HOME to a writable directory to keep them)")
    return fallback


def _discard(target, error):
    """Delete a library that failed its self-test and leave a note with the reason beside it."""
    note = target.with_name(FAILED_NOTE)
    try:
        target.unlink()
        with atomic_write(note) as tmp:
            Path(tmp).write_text(f"{error}\n", encoding="utf-8")
    except OSError as e:
        logger.debug("could not discard %s: %s", target, e)


def _build():
    """Return (path, compiled) of a working library; raise with the reason otherwise."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError(f"no C++ compiler found ({os.environ.get('CXX', 'g++')!r} not on PATH)")
    folder = _cache_folder(cache_key(cxx))
    target, note = folder / LIB_NAME, folder / FAILED_NOTE
    if ":" in str(target):
        raise RuntimeError(f"MindSpore cannot load a kernel from a path with ':' ({target})")
    if note.is_file():
        raise RuntimeError(f"the library built for this compiler and CPU failed its self-test before "
                           f"({' '.join(note.read_text(errors='replace').split())[:300]}); delete {note} to retry")
    compiled = False
    if not target.is_file():
        logger.info("compiling mindram kernels into %s", target)
        _compile(cxx, target)
        compiled = True
    try:
        self_test(target)
    except Exception as e:  # pylint: disable=broad-except
        _discard(target, e)
        raise RuntimeError(f"{target} failed its self-test and was deleted ({e})") from e
    return target, compiled


def kernel_library():
    """Path (str) of the compiled kernel library, or None to use MindSpore's built-in ops.

    Built (or found in the cache) once per process — again if the library file has since been removed (e.g.
    its ``$MINDRAM_HOME`` was a temporary directory); the environment switch is read on every call so that
    tests can disable kernels at any time.
    """
    if kernels_disabled():
        warn_once(f"{DISABLE_ENV} is set; using MindSpore's built-in GELU/LayerNorm")
        return None
    with _lock:
        if _state["done"] and _state["path"] is not None and not os.path.isfile(_state["path"]):
            logger.info("kernel library %s was removed; building or finding it again", _state["path"])
            _state.update(done=False, path=None, compiled=False)
        if not _state["done"]:
            try:
                path, compiled = _build()
                _state.update(path=str(path), compiled=compiled)
            except Exception as e:  # pylint: disable=broad-except
                warn_once(f"mindram C++ kernels unavailable ({e}); using MindSpore's built-in ops")
            _state["done"] = True
        return _state["path"]


def build_info():
    """Dict with the library ``path`` (or None) and whether this process ``compiled`` it."""
    kernel_library()
    return {"path": _state["path"], "compiled": _state["compiled"]}


def warn_once(message):
    """Log ``message`` as a warning unless a fallback warning was already logged."""
    log_once("fallback", logging.WARNING, message)


def log_once(key, level, message):
    """Log ``message`` at ``level`` the first time this process logs something under ``key``."""
    if key not in _state["logged"]:
        _state["logged"].add(key)
        logger.log(level, message)


def reset():
    """Forget the cached build result and what was logged, as in a new process (tests)."""
    with _lock:
        _state.update(_new_state())
