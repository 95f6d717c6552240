"""``stdcl import-official``: official .pt weights -> a stdcl safetensors checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from stdcl.cli import int_at_least, subparser
from stdcl.encoders.registry import available, specs


def register(sub: argparse._SubParsersAction) -> None:
    p = subparser(sub, "import-official", "import an official " + " / ".join(s.title.split(" (")[0] for s in specs()) + " .pt",
                  "  stdcl import-official --encoder ctrgcn --weights runs-65-25480.pt --out ctrgcn_ntu60.safetensors\n"
                  "  stdcl import-official --encoder ctrgcn --weights ucla.pt --num-classes 10 --layout ucla20 "
                  "--num-person 1 --window 52 --out ctrgcn_ucla.safetensors\n"
                  "the .pt is read with torch.load(weights_only=True): no code in it is ever run.")
    p.add_argument("--encoder", required=True, choices=available())
    p.add_argument("--weights", required=True, type=Path, help="official checkpoint (.pt)")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors (a .json is written beside it)")
    p.add_argument("--num-classes", type=int_at_least(1), default=60)
    p.add_argument("--layout", default="ntu25", help="layout name or YAML file (default ntu25)")
    p.add_argument("--num-person", type=int_at_least(1), default=2)
    p.add_argument("--window", type=int_at_least(1), default=64)
    p.add_argument("--in-channels", type=int_at_least(1), default=3)
    p.add_argument("--dataset", default=None, help="dataset name to record in the metadata")
    p.add_argument("--modality", default="joint")
    p.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from stdcl import weights

    spec = weights.OfficialSpec(args.encoder, args.num_classes, args.layout, args.window, args.num_person,
                                args.in_channels, args.dataset, args.modality)
    loaded = weights.load(args.weights, official=spec)
    out = loaded.save(args.out)
    n = sum(p.numel() for p in loaded.encoder.parameters())
    print(f"wrote {out} ({args.encoder}, {n:,} parameters, {args.num_classes} classes)")
    return 0
