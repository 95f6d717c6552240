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

    p = subparser(bsub, "encoders", "forward and forward+backward time per sample, parameters, FLOPs",
                  "  stdcl bench encoders\n  stdcl bench encoders --encoders ctrgcn hcn --batch 16 --amp")
    p.add_argument("--encoders", nargs="+", default=None, help="default: all")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 on CUDA)")
    p.set_defaults(func=_encoders)


def _prepare(args: argparse.Namespace) -> int:
    from stdcl.bench.prepare import bench_prepare

    bench_prepare(args.raw, copies=args.copies, workers=args.workers, reference=args.reference)
    return 0


def _encoders(args: argparse.Namespace) -> int:
    from stdcl.bench.encoders import bench_encoders

    bench_encoders(args.encoders, batch=args.batch, window=args.window, repeats=args.repeats,
                   device=args.device, amp=args.amp)
    return 0
