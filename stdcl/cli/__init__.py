"""The ``stdcl`` command line: a thin face over the package.

Every subcommand module exposes ``register(subparsers)`` and sets ``func`` on its parser;
expected errors (:class:`stdcl.errors.StdclError`) print one line and exit with 2, and so does an
``OSError`` about a path (it names the file: a user's file or folder could not be read or
written). Any other exception is a bug in the project and keeps its traceback; ``--debug`` (or
``STDCL_DEBUG=1`` in the environment) shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

from stdcl import __version__
from stdcl.errors import StdclError, user_error_line
from stdcl.logs import setup_logging

EPILOG = """examples:
  stdcl data inspect ../shared/data/nw_ucla_ctrgcn
  stdcl data prepare ntu60 --raw nturgb+d_skeletons --out data/ntu --workers 8
  stdcl data synth --out data/synthetic
  stdcl bench prepare --raw nturgb+d_skeletons
  stdcl import-official --encoder ctrgcn --weights runs-65-25480.pt --out ctrgcn.safetensors
  stdcl bench encoders
  stdcl train --config ucla --encoder ctrgcn --modality bone --stdcl on --out runs/x data.path=...
  stdcl eval runs/x --split test
  stdcl ensemble runs/j runs/b runs/jm runs/bm
  stdcl experiment plan experiments/ucla-ctrgcn-reference.yaml
  stdcl experiment run experiments/ucla-ctrgcn-reference.yaml --workers 2
  stdcl experiment table experiments/ucla-ctrgcn-reference.yaml
  stdcl analyze embed bundled:synthetic_hcn_stdcl --out emb.npz
  stdcl analyze metrics bundled:synthetic_hcn_baseline bundled:synthetic_hcn_stdcl --out metrics.json
  stdcl analyze report bundled:synthetic_hcn_baseline bundled:synthetic_hcn_stdcl --out report/
  stdcl bench analysis --sizes 2000 10000

run `stdcl COMMAND --help` for the options and examples of each command."""


def build_parser() -> argparse.ArgumentParser:
    from stdcl.cli import analyze, bench, data, encoders, experiment, train

    parser = argparse.ArgumentParser(
        prog="stdcl", description="STD-CL: spatial-temporal decoupling contrastive learning for skeletons.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"stdcl {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--debug", action="store_true", default=os.environ.get("STDCL_DEBUG", "") not in ("", "0"),
                        help="show the full traceback of an error (attach it when you report a problem); "
                             "also STDCL_DEBUG=1")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (data, encoders, train, experiment, analyze, bench):
        module.register(sub)
    return parser


def int_at_least(lo: int):
    """An argparse ``type``: a whole number ``>= lo`` (argparse turns the error into one usage line)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {lo}, got {value}")
        return value

    parse.__name__ = f"whole number >= {lo}"
    return parse


def float_in(lo: float, hi: float = float("inf"), above: bool = False):
    """An argparse ``type``: a finite number ``>= lo`` (``> lo`` when ``above``) and ``<= hi``."""
    want = f"{'>' if above else '>='} {lo:g}" + (f" and <= {hi:g}" if hi != float("inf") else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a finite number {want}, got {text!r}") from None
        if not (math.isfinite(value) and (value > lo if above else value >= lo) and value <= hi):
            raise argparse.ArgumentTypeError(f"must be a finite number {want}, got {text}")
        return value

    parse.__name__ = f"number {want}"
    return parse


def subparser(sub: argparse._SubParsersAction, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand parser whose ``--help`` ends with its examples."""
    return sub.add_parser(name, help=help.replace("%", "%%"), description=help, epilog="examples:\n" + examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that ``key=value`` overrides may also follow options
    (``stdcl eval RUN --out ev/ data.path=...``): argparse stops filling a positional list at the
    first option, so later ``key=value`` words join the command's ``overrides``, in order."""
    args, extra = parser.parse_known_args(argv)
    late = [w for w in extra if "=" in w and not w.startswith("-")]
    if late and isinstance(getattr(args, "overrides", None), list):
        args.overrides = [*args.overrides, *late]
        extra = [w for w in extra if w not in late]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stdcl`` console script and ``python -m stdcl``."""
    parser = build_parser()
    args = parse_args(parser, argv)
    setup_logging(-1 if args.quiet else args.verbose)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except BrokenPipeError:  # `stdcl ... | head`
        sys.stderr.close()
        return 0
    except (StdclError, OSError) as e:
        line = user_error_line(e)
        if args.debug or line is None:  # an OSError without a path is not about a user's file: a bug
            raise
        print(f"stdcl: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        logging.getLogger("stdcl").warning("interrupted")
        return 130
