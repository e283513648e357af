"""What the weight converters of every model family write, and their command-line plumbing.

A converter writes a checkpoint (``.ckpt``/``.safetensors``) and its config beside it (``<stem>.yaml``).
:func:`check_outputs` refuses bad output paths before any weights are read; :func:`save_converted` writes
both files atomically, never replaces an unrelated ``<stem>.yaml``, and re-opens the checkpoint to check
its tensors before the converter reports success. :func:`converter_parser` and :func:`run_converter` give
every converter the same flags and one-line errors (exit code 2, ``--debug`` for the traceback).

Used by ``models/clip/convert.py`` and ``models/ram/convert.py``. It lives under ``models/`` because it
writes model checkpoints through :mod:`.modeling_utils`; ``mindram/checkpoint/`` only reads PyTorch files
and knows no model.
"""
import argparse
import filecmp
import logging
import os
import sys
from pathlib import Path

from .. import catalog
from ..errors import CheckpointError, ConfigError, OutputExistsError
from ..utils.cli import add_debug_flag, configure_logging, run_cli
from ..utils.io import atomic_write

logger = logging.getLogger(__name__)


# modeling_utils imports MindSpore: imported when a converter first writes, not before its arguments are parsed
def check_checkpoint_path(path):
    from .modeling_utils import check_checkpoint_path as check  # pylint: disable=import-outside-toplevel
    return check(path)


def write_checkpoint(params, path):
    from .modeling_utils import write_checkpoint as write  # pylint: disable=import-outside-toplevel
    return write(params, path)


def verify_checkpoint(path, params):
    from .modeling_utils import verify_checkpoint as verify  # pylint: disable=import-outside-toplevel
    return verify(path, params)


def config_path_of(checkpoint):
    """The config file a converter writes beside ``checkpoint``: ``<stem>.yaml``."""
    return Path(checkpoint).with_suffix(".yaml")


def _check_parent(path):
    """Raise unless ``path``'s nearest existing ancestor is a directory (so it can be created)."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CheckpointError(f"{path}: cannot write it, {parent} is a file, not a directory")
            return


def check_outputs(checkpoint, inputs=()):
    """``(checkpoint, config path)`` after checking, before any work, that they can be written.

    Refused (:class:`CheckpointError`): a suffix other than ``.ckpt``/``.safetensors``, a parent that is a
    file, an output that exists but is not a file, and an output that is one of the ``inputs``.
    """
    checkpoint = check_checkpoint_path(checkpoint)
    config = config_path_of(checkpoint)
    _check_parent(checkpoint)
    for out in (checkpoint, config):
        if out.exists() and not out.is_file():
            raise CheckpointError(f"{out}: exists and is not a file; choose another --mindspore_path")
        for source in inputs:
            if out.exists() and Path(source).exists() and os.path.samefile(out, source):
                raise CheckpointError(f"{out}: is the input {source}; write the converted checkpoint elsewhere")
    return checkpoint, config


def _check_config(tmp, config, path):
    """Raise unless the config written to ``tmp`` reads back as ``config``."""
    if type(config).from_yaml(tmp) != config:
        raise ConfigError(f"{path}: the written config does not read back as the converted one; nothing written")


def _refuse_foreign(path, tmp, overwrite):
    """Raise :class:`OutputExistsError` if ``path`` exists with content other than ``tmp``'s and not ``overwrite``."""
    if path.exists() and not overwrite and not filecmp.cmp(path, tmp, shallow=False):
        raise OutputExistsError(f"{path}: exists and holds another config; the converter writes the config of "
                                f"{path.with_suffix('')}.* there; pass --overwrite to replace it or choose another "
                                f"--mindspore_path")


def save_converted(params, config, checkpoint, overwrite=False):
    """Write ``params`` to ``checkpoint`` and ``config`` to ``<stem>.yaml``; return both paths.

    Both are written atomically; the config is renamed into place only after the checkpoint is written and
    re-opened with exactly the names of ``params`` (else :class:`CheckpointError`, and the bad file is
    removed). An existing ``<stem>.yaml`` with other content is kept unless ``overwrite``.
    """
    checkpoint, config_path = check_outputs(checkpoint)
    with atomic_write(config_path) as config_tmp:
        config.save(config_tmp)
        _check_config(config_tmp, config, config_path)
        _refuse_foreign(config_path, config_tmp, overwrite)
        write_checkpoint(params, checkpoint)
        try:
            verify_checkpoint(checkpoint, params)
        except CheckpointError:
            checkpoint.unlink()
            raise
    logger.info("wrote %s (%d tensors) and %s", checkpoint, len(params), config_path)
    return checkpoint, config_path


def resolve_model_name(family, name):
    """``catalog.resolve`` with an unknown name reported as :class:`ConfigError` (one line in a CLI)."""
    try:
        return catalog.resolve(family, name)
    except KeyError as e:
        raise ConfigError(f"--model_name: {e.args[0]}") from e


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are a :class:`ConfigError` (one line, exit code 2 under run_cli)."""

    def error(self, message):
        raise ConfigError(f"{message}; see --help")


def converter_parser(description):
    """Parser with the flags every converter has: ``--overwrite``, ``--verbose`` and ``--debug``."""
    parser = _Parser(description=description)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing <stem>.yaml beside the output that holds another config")
    parser.add_argument("--verbose", action="store_true", help="log progress (default: warnings only)")
    return add_debug_flag(parser)


def run_converter(convert, parser, argv=None):
    """Run a converter's command line, ``convert(parser.parse_args(argv))``; return the exit code (0, or 2
    with one line on stderr for any expected error). Logging is configured first (run_cli's tqdm redirect
    takes over the handler): warnings only, INFO with ``--verbose``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging(logging.INFO if "--verbose" in argv else logging.WARNING)
    return run_cli(lambda args: convert(parser.parse_args(args)), argv)
