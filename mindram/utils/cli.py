"""Command-line plumbing shared by every CLI (run_mindformer.py, converters, scripts).

``run_cli(main, argv)`` runs ``main(argv)`` with logging that does not collide with tqdm bars, and turns the
project's own errors (:class:`~mindram.errors.MindramError` and subclasses), YAML, decoding and OS errors into one
clear line on stderr with exit code 2 (1 for :class:`~mindram.errors.TrainingStopped`: the run itself failed) —
never a traceback, unless ``--debug`` is among the arguments.
"""
import argparse
import logging
import sys

from ..errors import ConfigError, MindramError, TrainingStopped

EXIT_FAILED = 1   # the run itself failed (training stopped on a non-finite loss)
EXIT_USAGE = 2    # usage, config, data or checkpoint error
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_debug_flag(parser):
    """Add ``--debug`` (show tracebacks) to an argparse parser."""
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def expected_errors():
    """Exception types a CLI reports as one line: mindram's own, YAML, text decoding and OS errors."""
    types = [MindramError, OSError, UnicodeError]
    try:
        import yaml
        types.append(yaml.YAMLError)
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        pass
    return tuple(types)


def one_line(error):
    """``error`` as a single line: its type for non-mindram errors, its message with newlines folded."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, MindramError):
        return message
    if isinstance(error, OSError) and getattr(error, "filename", None) and str(error.filename) not in message:
        message = f"{message}: {error.filename}"
    return f"{type(error).__name__}: {message}"


def configure_logging(level=logging.INFO, fmt=LOG_FORMAT):
    """Root logging to stderr for a CLI (a no-op when the application configured logging already)."""
    logging.basicConfig(level=level, format=fmt)


def run_cli(main, argv=None, prog=None):
    """Run ``main(argv)`` and return its exit code; expected errors become one stderr line and exit code 2.

    Logging is routed through tqdm while ``main`` runs so that progress bars and log lines never share a line.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "mindram")
    debug = "--debug" in argv
    try:
        with logging_redirect_tqdm():
            code = main(argv)
    except expected_errors() as error:
        if debug:
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr, flush=True)
        return EXIT_FAILED if isinstance(error, TrainingStopped) else EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    return 0 if code is None else int(code)


def run_quiet_cli(main, argv=None, prog=None):
    """:func:`run_cli` for a command that logs warnings only, or everything with ``--verbose`` in ``argv``
    (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging(logging.INFO if "--verbose" in argv else logging.WARNING)
    return run_cli(main, argv, prog=prog)


class OneLineErrorParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are :class:`ConfigError` (one line, exit 2 under :func:`run_cli`)."""

    def error(self, message):
        raise ConfigError(f"{message}; see --help")
