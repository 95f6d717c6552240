"""``stdcl train | eval | export | ensemble``: training runs and what is done with them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stdcl.cli import float_in, int_at_least, subparser
from stdcl.encoders.registry import available

PROTOCOL_HELP = "ntu60-xsub, ntu60-xview, ntu120-xsub, ntu120-xset, ucla, synthetic, custom, or a YAML file"


def register(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "train", "train an encoder, with or without the STD-CL head",
                  "  stdcl train --config ntu60-xsub --encoder ctrgcn --modality joint --stdcl on --out runs/ctr-j "
                  "data.path=data/ntu\n"
                  "  stdcl train --config ucla --encoder ctrgcn --modality bone --stdcl on --out runs/x "
                  "train.epochs=2 data.path=../shared/data/nw_ucla_ctrgcn\n"
                  "  stdcl train --config synthetic --encoder hcn --stdcl off --out runs/syn data.window=32\n"
                  "  stdcl train --config my.yaml --out runs/mine   # my.yaml: base: custom, data: {path: ...}\n"
                  "  stdcl train --resume runs/ctr-j                 # continue from its last state\n"
                  "  stdcl train --config ucla --encoder hyperformer --print-config\n"
                  "  torchrun --nproc_per_node 4 -m stdcl train --config ntu60-xsub --encoder ctrgcn --out runs/ddp "
                  "train.sync_bn=true")
    p.add_argument("--config", default=None, help=f"protocol or file: {PROTOCOL_HELP} (default synthetic)")
    p.add_argument("--encoder", default=None, choices=available(),
                   help="encoder and its reference recipe (default: the config's, ctrgcn)")
    p.add_argument("--modality", default=None, choices=["joint", "bone", "joint_motion", "bone_motion"])
    p.add_argument("--stdcl", default=None, choices=["on", "off"], help="train with the STD-CL head (default on)")
    p.add_argument("--out", type=Path, default=None,
                   help="run directory to create (new or empty; one whose run failed before its first checkpoint "
                        "is reused)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN",
                   help="continue RUN from its last saved state, or from step 0 if it saved none (overrides still "
                        "apply, e.g. train.epochs=90)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the config's device: auto)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides with dotted keys and YAML values, e.g. train.epochs=2 optim.lr=0.05")
    p.set_defaults(func=_train)

    p = subparser(sub, "eval", "top-1/top-5, per-class accuracy, confusion matrix and scores of a run or checkpoint",
                  "  stdcl eval runs/ctr-j                       # best checkpoint on the test split\n"
                  "  stdcl eval runs/ctr-j --split val --which last\n"
                  "  stdcl eval model.safetensors --out eval/ data.path=/data/ntu\n"
                  "writes metrics.json, confusion.csv/.json, per_class.csv and scores.npz "
                  "(default: RUN/eval-<checkpoint>-<split>/)")
    p.add_argument("target", type=Path, help="run directory or encoder checkpoint (.safetensors)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--which", default="best", choices=["best", "last"], help="checkpoint of a run (default best)")
    p.add_argument("--out", type=Path, default=None, help="output folder")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int_at_least(1), default=None)
    p.add_argument("--workers", type=int_at_least(0), default=None)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data overrides, e.g. data.path=/data/ntu")
    p.set_defaults(func=_eval)

    p = subparser(sub, "export", "write a run's encoder alone (safetensors + json), the deployable model",
                  "  stdcl export runs/ctr-j --out ctrgcn_ntu60_joint.safetensors\n"
                  "  stdcl export runs/ctr-j --which last --half --out model_fp16.safetensors\n"
                  "  stdcl export runs/ctr-j-stdcl --with-head --with-probes --half --out checkpoints/demo.safetensors")
    p.add_argument("run", type=Path, help="run directory (or an encoder checkpoint)")
    p.add_argument("--out", type=Path, required=True, help="output .safetensors (a .json is written beside it)")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--half", action="store_true", help="store floating-point weights as fp16")
    p.add_argument("--with-head", action="store_true",
                   help="also write the trained STD-CL head to <out>.head.safetensors (for analysis)")
    p.add_argument("--with-probes", action="store_true",
                   help="also copy the run's training probes to <out>.probes/ (stdcl analyze evolution)")
    p.set_defaults(func=_export)

    p = subparser(sub, "ensemble", "fuse the scores of several streams (joint, bone, motion); weights tuned on val",
                  "  stdcl ensemble runs/j runs/b runs/jm runs/bm                 # weights tuned on validation\n"
                  "  stdcl ensemble runs/j runs/b runs/jm runs/bm --weights 0.6 0.6 0.4 0.4\n"
                  "  stdcl ensemble runs/j runs/b --step 0.05 --out fusion.json\n"
                  "  stdcl ensemble runs/j runs/b data.path=/data/ntu60   # streams scored on data elsewhere")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run directories (or checkpoints) of the streams, same dataset and split; then data "
                        "overrides, e.g. data.path=/data/ntu (the streams are then re-scored)")
    p.add_argument("--weights", type=_weight_or_override, nargs="+", default=None,
                   help="fusion weights, one per stream (default: tuned on val); key=value words after them are "
                        "data overrides too")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--step", type=float_in(0, 1, above=True), default=0.1, help="grid step of the weight search (default 0.1)")
    p.add_argument("--softmax", action="store_true", help="fuse softmax probabilities instead of raw logits")
    p.add_argument("--recompute", action="store_true", help="re-evaluate the streams even if scores exist")
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    p.set_defaults(func=_ensemble)


def _train(args: argparse.Namespace) -> int:
    from stdcl.errors import ConfigError
    from stdcl.train.config import dump_config, load_config
    from stdcl.train.engine import train
    from stdcl.train.run_dir import resume_config

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.resume is not None:
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise ConfigError("--resume RUN continues RUN in place; do not give --out")
        if args.config or args.encoder or args.modality or args.stdcl:
            raise ConfigError("--resume uses the run's saved config; change it with key=value overrides only")
        cfg = resume_config(args.resume, overrides)
        run_dir = args.resume
    else:
        cfg = load_config(args.config or "synthetic", encoder=args.encoder, modality=args.modality,
                          stdcl=args.stdcl, overrides=overrides)
        if args.print_config:
            sys.stdout.write(dump_config(cfg))
            return 0
        if args.out is None:
            raise ConfigError("--out RUN is required (the run directory to create)")
        run_dir = args.out
    if args.print_config:
        sys.stdout.write(dump_config(cfg))
        return 0
    result = train(cfg, run_dir, resume=args.resume is not None, show_progress=False if args.no_progress else None)
    if result.get("stopped"):
        print(f"stopped at step {result['global_step']}; continue with: stdcl train --resume {run_dir}")
        return 0
    best, final = result["best"], result["final"]

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    print(f"{run_dir}: {result['global_step']} steps; best val top-1 {pct(best.get('val_top1'))} "
          f"(epoch {best.get('epoch')}, test {pct(best.get('test_top1'))}); "
          f"final test top-1 {pct(final.get('test_top1'))}, top-5 {pct(final.get('test_top5'))}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from stdcl.train.evaluate import evaluate

    m = evaluate(args.target, split=args.split, out_dir=args.out, which=args.which, overrides=args.overrides,
                 device=args.device, batch_size=args.batch_size, num_workers=args.workers)
    print(f"{m['checkpoint']} [{m['split']}, {m['n']} samples]: top-1 {100 * m['top1']:.2f}%, "
          f"top-5 {100 * m['top5']:.2f}% -> {m['out_dir']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from stdcl.train.export import export

    out, n = export(args.run, args.out, which=args.which, half=args.half, with_head=args.with_head,
                    with_probes=args.with_probes)
    print(f"wrote {out} ({n:,} parameters)")
    return 0


def _weight_or_override(text: str) -> float | str:
    """A ``--weights`` word: a weight (a finite number >= 0), or a ``key=value`` data override that followed
    the weights (nargs="+" takes every word up to the next option)."""
    return text if "=" in text else float_in(0)(text)


def _ensemble(args: argparse.Namespace) -> int:
    from stdcl.errors import ConfigError
    from stdcl.io import write_json_atomic
    from stdcl.train.ensemble import ensemble

    runs = [r for r in args.runs if "=" not in str(r) or r.exists()]  # key=value words are overrides
    overrides = [str(r) for r in args.runs if r not in runs]
    weights = None
    if args.weights is not None:
        weights = [w for w in args.weights if isinstance(w, float)] or None
        overrides += [w for w in args.weights if isinstance(w, str)]
    if not runs:
        raise ConfigError("give the runs (or checkpoints) of the streams to fuse")
    r = ensemble(runs, weights=weights, which=args.which, step=args.step, softmax=args.softmax,
                 recompute=args.recompute, overrides=overrides)

    def pct(v):
        return "-" if v is None else f"{100 * v:6.2f}%"

    width = max(len(s["run"]) for s in r["streams"])
    print(f"{'stream':<{width}}  {'weight':>6}  {'val top-1':>9}  {'test top-1':>10}")
    for s in r["streams"]:
        print(f"{s['run']:<{width}}  {s['weight']:>6.2f}  {pct(s['val_top1']):>9}  {pct(s['test_top1']):>10}")
    print(f"{'fused':<{width}}  {'':>6}  {pct(r['fused_val_top1']):>9}  {pct(r['fused_test_top1']):>10}   "
          f"(weights {r['weights_source']}; {r['n_val']} val / {r['n_test']} test samples)")
    if args.out:
        write_json_atomic(args.out, r)
    return 0

