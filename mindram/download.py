"""``python -m mindram.download NAME [--family clip|ram] [--no-convert]``: fetch pretrained weights now.

Downloads the catalog source of ``NAME`` into ``$MINDRAM_HOME/<family>/downloads/`` (resumable, verified
against the published size/sha256) and converts it into ``$MINDRAM_HOME/<family>/<file>`` — what
``from_pretrained(NAME)`` does on first use (see :mod:`mindram.hub`). ``--no-convert`` keeps the verified
original instead. ``--list`` prints the names of a family, ``*`` marking those present locally. Errors are
one line on stderr (exit code 2; ``--debug`` for the traceback).
"""
import argparse
import sys

from . import catalog
from .errors import ConfigError, UnknownNameError
from .utils.cli import OneLineErrorParser, add_debug_flag, run_quiet_cli

FAMILIES = ("clip", "ram")


def build_parser():
    parser = OneLineErrorParser(prog="python -m mindram.download", description="Download, verify and convert pretrained weights")
    parser.add_argument("name", nargs="?", help="model name, e.g. clip_vit_b_32 or ram_plus_swin_l_384")
    parser.add_argument("--family", choices=FAMILIES, default=None, help="model family (default: the one that "
                        "knows NAME)")
    parser.add_argument("--convert", action=argparse.BooleanOptionalAction, default=True,
                        help="convert to a MindSpore checkpoint (default); --no-convert keeps the verified original")
    parser.add_argument("--list", action="store_true", help="list the names of --family (or all), * = present")
    parser.add_argument("--verbose", action="store_true", help="log progress")
    return add_debug_flag(parser)


def resolve_any(name, family=None):
    """The catalog record of ``name`` in ``family``, or in the one family that knows it."""
    if family is not None:
        return catalog.resolve(family, name)
    found, errors = [], []
    for fam in FAMILIES:
        try:
            found.append(catalog.resolve(fam, name))
        except UnknownNameError as e:
            errors.append(str(e))
    if len(found) > 1:
        raise ConfigError(f"{name!r} is known to several families {[r.family for r in found]}; pass --family")
    if not found:
        raise UnknownNameError(" / ".join(errors))
    return found[0]


def _main(argv):
    args = build_parser().parse_args(argv)
    if args.list:
        for fam in [args.family] if args.family else FAMILIES:
            for name, present in catalog.support_list(fam, with_status=True).items():
                print(f"{'*' if present else ' '} {fam:4s} {name}")
        return 0
    if not args.name:
        raise ConfigError("a model NAME is required (or --list); see --help")
    record = resolve_any(args.name, args.family)
    from .models.pretrained_weights import fetch_checkpoint
    path = fetch_checkpoint(record, convert=args.convert)
    print(path)
    return 0


def main(argv=None):
    """Command line; returns the exit code (0, or 2 with one line on stderr)."""
    return run_quiet_cli(_main, argv, prog="mindram.download")


if __name__ == "__main__":
    sys.exit(main())
