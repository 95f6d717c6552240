"""``stdcl bench ...``: benchmarks that print numbers (never timed tests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stdcl.cli import float_in, int_at_least, subparser
from stdcl.encoders.registry import available


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks that print numbers", description="Benchmarks.")
    bsub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    p = subparser(bsub, "prepare", "files/s and peak memory of raw NTU preparation",
                  "  stdcl bench prepare --raw ../shared/data/ntu_skeleton_levelca --copies 200\n"
                  "  stdcl bench prepare --raw ../shared/data/ntu_skeleton_levelca --reference /path/to/CTR-GCN")
    p.add_argument("--raw", required=True, type=Path, help="folder of .skeleton files to replicate")
    p.add_argument("--copies", type=int_at_least(1), default=200,
                   help="files to benchmark on (copies of --raw's files)")
    p.add_argument("--workers", type=int_at_least(1), default=1)
    p.add_argument("--reference", type=Path, default=None,
                   help="a CTR-GCN checkout: also time its data/ntu scripts on the same files")
    p.set_defaults(func=_prepare)

    p = subparser(bsub, "encoders", "forward and forward+backward time per sample, parameters, FLOPs",
                  "  stdcl bench encoders\n  stdcl bench encoders --encoders ctrgcn hcn --batch 16 --amp")
    p.add_argument("--encoders", nargs="+", default=None, help="default: all")
    p.add_argument("--batch", type=int_at_least(1), default=16)
    p.add_argument("--window", type=int_at_least(1), default=64)
    p.add_argument("--repeats", type=int_at_least(1), default=3)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 on CUDA)")
    p.set_defaults(func=_encoders)

    p = subparser(bsub, "train-step", "training-step time of an encoder alone vs with the STD-CL head and loss",
                  "  stdcl bench train-step --encoder ctrgcn\n"
                  "  stdcl bench train-step --encoder hyperformer --amp --repeats 20 --device cuda")
    p.add_argument("--encoder", default="ctrgcn", choices=available())
    p.add_argument("--batch", type=int_at_least(1), default=16)
    p.add_argument("--window", type=int_at_least(1), default=64)
    p.add_argument("--repeats", type=int_at_least(1), default=10, help="interleaved steps of each (median reported)")
    p.add_argument("--bank-size", type=int_at_least(1), default=40_000, help="bank slots (NTU60 X-Sub: ~40k)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 on CUDA)")
    p.set_defaults(func=_train_step)
    _register_loss(bsub, subparser)
    _register_analysis(bsub, subparser)
    _register_gpu(bsub, subparser)


def _register_gpu(bsub: argparse._SubParsersAction, subparser) -> None:
    """``stdcl bench gpu``: :func:`stdcl.bench.gpu.run_gpu_check` (every CUDA path, one JSON)."""
    p = subparser(bsub, "gpu", "one prepared check of every CUDA path (AMP, loss, train step, DDP, job, NW-UCLA)",
                  "  stdcl bench gpu --out /tmp/gpu-check --ucla ../shared/data/nw_ucla_ctrgcn\n"
                  "  stdcl bench gpu --out /tmp/gpu-rehearsal --device cpu --tiny")
    p.add_argument("--out", type=Path, required=True, help="folder for gpu-check.json, its log and the runs")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="a few small steps per part (the CPU rehearsal)")
    p.add_argument("--budget-s", type=float_in(0, above=True), default=540.0, help="seconds for all parts together (default 540)")
    p.add_argument("--ucla", type=Path, default=None, help="NW-UCLA folder (holding all_sqe/); absent: skipped")
    p.add_argument("--parts", default=None, help="comma-separated parts to run (default all): environment, loss, "
                   "amp, train_step, ddp, finetune_job, ucla")
    p.set_defaults(func=_gpu)


def _gpu(args: argparse.Namespace) -> int:
    from stdcl.bench.gpu import JSON_NAME, run_gpu_check, summary_lines

    only = None if args.parts is None else [x.strip() for x in args.parts.split(",") if x.strip()]
    report = run_gpu_check(args.out, device=args.device, tiny=args.tiny, budget_s=args.budget_s, ucla=args.ucla,
                           only=only)
    print(f"gpu check on {report['device']} in {report['elapsed_s']:.1f} s -> {args.out / JSON_NAME}")
    print("\n".join(summary_lines(report)))
    return 0 if all(r["status"] != "failed" for r in report["parts"].values()) else 1


def _register_loss(bsub: argparse._SubParsersAction, subparser) -> None:
    """``stdcl bench loss``: :func:`stdcl.bench.loss.bench_loss` (the head's batched loss vs the released loop)."""
    p = subparser(bsub, "loss", "time of the batched STD-CL loss against the released per-anchor loop",
                  "  stdcl bench loss\n  stdcl bench loss --batch 16 --bank-size 40000 --device cuda")
    p.add_argument("--bank-size", type=int_at_least(1), default=40000, help="bank slots (NTU60 X-Sub: ~40k)")
    p.add_argument("--dim", type=int_at_least(1), default=256, help="embedding size D")
    p.add_argument("--batch", type=int_at_least(1), default=64, help="anchors per step")
    p.add_argument("--num-classes", type=int_at_least(1), default=60)
    p.add_argument("--repeats", type=int_at_least(1), default=3)
    p.add_argument("--num-pos", type=int_at_least(1), default=128, help="P")
    p.add_argument("--num-neg", type=int_at_least(1), default=512, help="K")
    p.add_argument("--tau", type=float_in(0, above=True), default=0.8)
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.set_defaults(func=_loss)


def _register_analysis(bsub: argparse._SubParsersAction, subparser) -> None:
    """``stdcl bench analysis``: :func:`analysis.bench.bench_analysis` (embeddings, projections, metrics, the page)."""
    p = subparser(bsub, "analysis", "time of embeddings, UMAP, metrics, figures and the Embeddings page in a browser",
                  "  stdcl bench analysis\n"
                  "  stdcl bench analysis --sizes 2000 10000 --no-browser\n"
                  "  stdcl bench analysis --sizes 500 --device cuda --out bench.json")
    p.add_argument("--sizes", type=int_at_least(1), nargs="+", default=[2000, 10000, 50000],
                   help="samples of the synthetic set")
    p.add_argument("--checkpoint", default="bundled:synthetic_hcn_stdcl",
                   help="a checkpoint trained on the synthetic set (default bundled:synthetic_hcn_stdcl)")
    p.add_argument("--device", default=None, help="where embeddings are computed: cuda when present (default), or cpu")
    p.add_argument("--batch-size", type=int_at_least(1), default=None, help="default 256 on a GPU, 64 on the CPU")
    p.add_argument("--no-browser", action="store_true",
                   help="skip the page timings (headless Chromium against streamlit run app/main.py)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for the generated data, the cache and the server log (default: a new temporary one)")
    p.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    p.set_defaults(func=_analysis)


def _analysis(args: argparse.Namespace) -> int:
    from analysis.bench import bench_analysis

    bench_analysis(args.sizes, checkpoint=args.checkpoint, device=args.device, batch_size=args.batch_size,
                   out=args.out, browser=not args.no_browser, workdir=args.workdir)
    return 0


def _train_step(args: argparse.Namespace) -> int:
    from stdcl.train.bench import bench_train_step

    bench_train_step(args.encoder, batch=args.batch, window=args.window, repeats=args.repeats,
                     bank_size=args.bank_size, device=args.device, amp=args.amp)
    return 0


def _loss(args: argparse.Namespace) -> int:
    from stdcl.bench.loss import bench_loss

    bench_loss(bank_size=args.bank_size, dim=args.dim, batch=args.batch, num_classes=args.num_classes,
               repeats=args.repeats, num_pos=args.num_pos, num_neg=args.num_neg, tau=args.tau, seed=args.seed,
               device=args.device)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from stdcl.bench.prepare import bench_prepare

    bench_prepare(args.raw, copies=args.copies, workers=args.workers, reference=args.reference)
    return 0


def _encoders(args: argparse.Namespace) -> int:
    from stdcl.bench.encoders import bench_encoders

    bench_encoders(args.encoders, batch=args.batch, window=args.window, repeats=args.repeats,
                   device=args.device, amp=args.amp)
    return 0
