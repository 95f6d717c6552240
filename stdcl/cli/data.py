"""``stdcl data ...``: prepare, inspect, synthesise and list layouts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stdcl.cli import int_at_least, subparser


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare, inspect and generate skeleton data",
                          description="Prepare, inspect and generate skeleton data.")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = subparser(dsub, "prepare", "convert raw NTU .skeleton folders to CTR-GCN .npz files",
                  "  stdcl data prepare ntu60 --raw nturgb+d_skeletons --out data/ntu\n"
                  "  stdcl data prepare ntu120 --raw nturgb+d_skeletons --raw120 nturgb+d_skeletons120 "
                  "--out data/ntu120 --workers 8\n"
                  "writes NTU60_CS.npz + NTU60_CV.npz (or NTU120_CSub.npz + NTU120_CSet.npz), identical to\n"
                  "the CTR-GCN pipeline's, plus <name>.names.json sidecars with the sample names.")
    p.add_argument("benchmark", choices=["ntu60", "ntu120"])
    p.add_argument("--raw", required=True, type=Path, help="folder of .skeleton files (may be partial)")
    p.add_argument("--raw120", type=Path, help="second folder: the NTU120 extension files")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--workers", type=int_at_least(1), default=1, help="parallel parser processes (default 1)")
    p.set_defaults(func=_prepare)

    p = subparser(dsub, "inspect", "summarise a dataset file or folder (any supported format)",
                  "  stdcl data inspect ../shared/data/nw_ucla_ctrgcn\n"
                  "  stdcl data inspect data/ntu/NTU60_CS.npz --limit 2000\n"
                  "  stdcl data inspect annotations/ntu60_3danno.pkl\n"
                  "  stdcl data inspect ../shared/data/nw_ucla_ctrgcn/all_sqe/a01_s01_e00_v01.json\n"
                  "  stdcl data inspect S001C001P001R001A001.skeleton")
    p.add_argument("path", type=Path)
    p.add_argument("--limit", type=int_at_least(1), default=None,
                   help="read at most N samples per split (random subset)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_inspect)

    p = subparser(dsub, "convert-ts", "convert a train/test pair of UEA .ts files (e.g. NATOPS) to plain numpy",
                  "  stdcl data convert-ts ../shared/data/uea_natops/NATOPS_TRAIN.ts \\\n"
                  "      ../shared/data/uea_natops/NATOPS_TEST.ts --layout experiments/layouts/natops8.yaml \\\n"
                  "      --out data/natops.npz\n"
                  "  stdcl train --config custom --encoder hcn --out runs/natops data.path=data/natops.npz\n"
                  "The .ts dimensions are read point-major (x, y, z of point 1, then point 2, ...); class\n"
                  "names come from --class-names, else the header comments' 'N: name' lines.")
    p.add_argument("train", type=Path, help="the training .ts file")
    p.add_argument("test", type=Path, help="the test .ts file")
    p.add_argument("--layout", required=True, help="layout name or YAML file; its joints are the points in file order")
    p.add_argument("--out", required=True, type=Path, help="output .npz")
    p.add_argument("--channels", type=int_at_least(1), default=3, help="coordinates per point (default 3)")
    p.add_argument("--class-names", nargs="+", help="class names in @classLabel order")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_convert_ts)

    p = subparser(dsub, "synth", "write the synthetic teaching set in the plain-numpy format",
                  "  stdcl data synth --out data/synthetic\n"
                  "  stdcl data synth --out data/synth-big --num-samples 10000 --seed 3")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--num-samples", type=int_at_least(1), default=None,
                   help="total samples (default: the teaching size)")
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.set_defaults(func=_synth)

    p = subparser(dsub, "layouts", "list shipped layouts, or show one (or a custom YAML layout)",
                  "  stdcl data layouts\n  stdcl data layouts ntu25\n  stdcl data layouts my_mediapipe.yaml")
    p.add_argument("layout", nargs="?")
    p.set_defaults(func=_layouts)


def _prepare(args: argparse.Namespace) -> int:
    from stdcl.data.ntu_prepare import prepare_ntu

    raw = [args.raw] + ([args.raw120] if args.raw120 else [])
    summary = prepare_ntu(args.benchmark, raw, args.out, workers=args.workers)
    print(summary)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    if args.path.suffix == ".skeleton":
        from stdcl.data.ntu_denoise import describe_skeleton_file

        print(describe_skeleton_file(args.path))
        return 0
    from dataclasses import asdict

    from stdcl.data.inspect import inspect_path

    report = inspect_path(args.path, args.limit)
    print(json.dumps(asdict(report), indent=2) if args.json else report)
    return 0


def _convert_ts(args: argparse.Namespace) -> int:
    from stdcl.data.uea_ts import convert_ts

    layout = args.layout if not args.layout.endswith((".yaml", ".yml")) else Path(args.layout)
    path = convert_ts(args.train, args.test, args.out, layout, args.class_names, args.channels, args.force)
    print(f"wrote {path}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from stdcl.data.synthetic import write_synthetic

    kwargs = {"seed": args.seed} | ({"num_samples": args.num_samples} if args.num_samples else {})
    path = write_synthetic(args.out, **kwargs)
    print(f"wrote {path}")
    return 0


def _layouts(args: argparse.Namespace) -> int:
    from stdcl.data.layouts import available_layouts, get_layout

    if args.layout is None:
        for name in available_layouts():
            lay = get_layout(name)
            print(f"{name}: {lay.num_joints} joints, centre {lay.joints[lay.center]}, {lay.num_groups} groups")
        return 0
    lay = get_layout(args.layout)
    print(json.dumps(lay.to_mapping(), indent=None))
    return 0
