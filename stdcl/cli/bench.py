"""``stdcl bench ...``: benchmarks that print numbers (never timed tests)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from stdcl.cli import subparser

    bench = sub.add_parser("bench", help="benchmarks that print numbers", description="Benchmarks.")
    bsub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    p = subparser(bsub, "prepare", "files/s and peak memory of raw NTU preparation",
                  "  stdcl bench prepare --raw ../shared/data/ntu_skeleton_levelca --copies 200\n"
                  "  stdcl bench prepare --raw ../shared/data/ntu_skeleton_levelca --reference /path/to/CTR-GCN")
    p.add_argument("--raw", required=True, type=Path, help="folder of .skeleton files to replicate")
    p.add_argument("--copies", type=int, default=200, help="files to benchmark on (copies of --raw's files)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--reference", type=Path, default=None,
                   help="a CTR-GCN checkout: also time its data/ntu scripts on the same files")
    p.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from stdcl.bench.prepare import bench_prepare

    bench_prepare(args.raw, copies=args.copies, workers=args.workers, reference=args.reference)
    return 0
