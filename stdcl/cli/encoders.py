"""``stdcl import-official``: official .pt weights -> a stdcl safetensors checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from stdcl.cli import subparser

    p = subparser(sub, "import-official", "import an official HCN / 2s-AGCN / CTR-GCN / Hyperformer .pt",
                  "  stdcl import-official --encoder ctrgcn --weights runs-65-25480.pt --out ctrgcn_ntu60.safetensors\n"
                  "  stdcl import-official --encoder ctrgcn --weights ucla.pt --num-classes 10 --layout ucla20 "
                  "--num-person 1 --window 52 --out ctrgcn_ucla.safetensors\n"
                  "the .pt is read with torch.load(weights_only=True): no code in it is ever run.")
    p.add_argument("--encoder", required=True, choices=["hcn", "agcn", "ctrgcn", "hyperformer"])
    p.add_argument("--weights", required=True, type=Path, help="official checkpoint (.pt)")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors (a .json is written beside it)")
    p.add_argument("--num-classes", type=int, default=60)
    p.add_argument("--layout", default="ntu25", help="layout name or YAML file (default ntu25)")
    p.add_argument("--num-person", type=int, default=2)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--dataset", default=None, help="dataset name to record in the metadata")
    p.add_argument("--modality", default="joint")
    p.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from stdcl.checkpoint import save_encoder
    from stdcl.data.classes import UCLA_CLASSES, ntu_classes, numbered_classes
    from stdcl.encoders.official import from_official, load_official_file

    sd = load_official_file(args.weights)
    model = from_official(args.encoder, sd, num_classes=args.num_classes, layout=args.layout,
                          num_person=args.num_person, window=args.window, in_channels=args.in_channels)
    k = args.num_classes
    names = ntu_classes(k) if k in (60, 120) else UCLA_CLASSES if k == 10 else numbered_classes(k)
    out = save_encoder(args.out, model, class_names=names, dataset=args.dataset, modality=args.modality,
                       source={"official": str(args.weights)})
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({args.encoder}, {n:,} parameters, {k} classes)")
    return 0
