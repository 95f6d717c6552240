"""``stdcl analyze embed | project | metrics | report | evolution``: the analysis layer from the command line.

Thin argparse only: the work is in :mod:`analysis.cli`, imported when a command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stdcl.cli import float_in, int_at_least, subparser

CHECKPOINT_HELP = "run directory, encoder checkpoint (.safetensors) or bundled:NAME (e.g. bundled:synthetic_hcn_stdcl)"


def _common(p: argparse.ArgumentParser, pair: bool = False) -> None:
    if pair:
        p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                       help=CHECKPOINT_HELP + "; give two to compare them (the first is the reference, "
                                              "e.g. the baseline)")
    else:
        p.add_argument("checkpoint", metavar="CHECKPOINT", help=CHECKPOINT_HELP)
    p.add_argument("--split", default="test", choices=["test", "val"], help="split to analyse (default test)")
    p.add_argument("--dataset", default=None, help="analyse another dataset than the checkpoint's (a protocol name)")
    p.add_argument("--data-path", type=Path, default=None, help="where the dataset is (overrides the checkpoint's)")
    p.add_argument("--modality", default=None, choices=["joint", "bone", "joint_motion", "bone_motion"])
    p.add_argument("--max-samples", type=int_at_least(1), default=None, metavar="N",
                   help="a stratified subset of about N samples (default: the whole split)")
    p.add_argument("--seed", type=int_at_least(0), default=0,
                   help="seed of the subset and of the projections (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--batch-size", type=int_at_least(1), default=64)
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="cache folder (default $STDCL_CACHE or ~/.cache/stdcl)")
    p.add_argument("--no-cache", action="store_true", help="recompute and store nothing")


def _projection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="umap", choices=["umap", "pca", "tsne"], help="projection (default umap)")
    p.add_argument("--n-neighbors", type=int_at_least(2), default=15, help="UMAP neighbours (default 15)")
    p.add_argument("--n-epochs", type=int_at_least(1), default=200, help="UMAP epochs (default 200)")
    p.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"],
                   help="UMAP / t-SNE distance (default cosine)")
    p.add_argument("--perplexity", type=float_in(0, above=True), default=30.0, help="t-SNE perplexity (default 30)")


def _command(asub: argparse._SubParsersAction, name: str, help: str, examples: str, func,
             pair: bool = False, projection: bool = False) -> argparse.ArgumentParser:
    """One ``stdcl analyze`` subcommand: its checkpoint(s) and data options (:func:`_common`), the
    projection options when it projects, and ``func`` to run; the caller adds its own options."""

    p = subparser(asub, name, help, examples)
    _common(p, pair=pair)
    if projection:
        _projection_options(p)
    p.set_defaults(func=func)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    analyze = sub.add_parser("analyze", help="embeddings, projections, separation metrics and HTML reports",
                             description="Analyse checkpoints: embeddings, projections, metrics, reports.")
    asub = analyze.add_subparsers(dest="analyze_command", metavar="SUBCOMMAND", required=True)

    p = _command(asub, "embed", "extract the embeddings (global, spatial, temporal, pooled) and logits of a split",
                 "  stdcl analyze embed bundled:synthetic_hcn_stdcl --out emb.npz\n"
                 "  stdcl analyze embed runs/ctr-j --split val --max-samples 2000 --out emb.npz\n"
                 "  stdcl analyze embed model.safetensors --data-path /data/ntu --device cuda\n"
                 "writes a .npz with one (N, d) array per space, logits, labels, predictions, names, indices, "
                 "class_names", _embed)
    p.add_argument("--out", type=Path, default=None, help="output .npz (default: only fill the cache)")

    p = _command(asub, "project", "2-D projections (UMAP, PCA, t-SNE) of embedding spaces, as CSV or npz",
                 "  stdcl analyze project bundled:synthetic_hcn_stdcl --out coords.csv\n"
                 "  stdcl analyze project runs/ctr-j --spaces spatial temporal --method pca --out coords.npz\n"
                 "  stdcl analyze project runs/ctr-j --method tsne --perplexity 50 --max-samples 5000 --out c.csv",
                 _project, projection=True)
    p.add_argument("--spaces", nargs="+", default=["global", "spatial", "temporal"],
                   help="spaces to project: global spatial temporal spatial_pooled temporal_pooled "
                        "(default the first three)")
    p.add_argument("--out", type=Path, required=True, help="output .csv (one row per sample) or .npz")

    p = _command(asub, "metrics", "separation metrics per embedding space; with two checkpoints, their comparison",
                 "  stdcl analyze metrics bundled:synthetic_hcn_stdcl\n"
                 "  stdcl analyze metrics bundled:synthetic_hcn_baseline bundled:synthetic_hcn_stdcl "
                 "--out metrics.json\n"
                 "  stdcl analyze metrics runs/base runs/stdcl --max-samples 5000 --k 10", _metrics, pair=True)
    p.add_argument("--k", type=int_at_least(1), default=5, help="neighbours of the k-NN metrics (default 5)")
    p.add_argument("--metric-samples", type=int_at_least(1), default=5000,
                   help="samples the pairwise metrics use at most (default 5000)")
    p.add_argument("--out", type=Path, default=None, help="also write everything as JSON")

    p = _command(asub, "report", "a self-contained HTML report (+ PNGs) of one checkpoint or a baseline/STD-CL pair",
                 "  stdcl analyze report bundled:synthetic_hcn_baseline bundled:synthetic_hcn_stdcl --out report/\n"
                 "  stdcl analyze report runs/ctr-j --out report/ --method pca --max-samples 2000\n"
                 "  stdcl analyze report runs/base runs/stdcl --out report/ --attribution-samples 5",
                 _report, pair=True, projection=True)
    p.add_argument("--attribution-samples", type=int_at_least(0), default=3,
                   help="samples with attribution examples (default 3)")
    p.add_argument("--out", type=Path, required=True, help="report folder (index.html and PNGs; replaced if a report)")


    p = subparser(asub, "evolution", "how the embedding spaces formed during training, from a run's probes (HTML + PNGs)",
                  "  stdcl analyze evolution runs/ctr-j-stdcl --out evo/\n"
                  "  stdcl analyze evolution runs/ctr-j-stdcl runs/ctr-j --out evo/ --method procrustes\n"
                  "  stdcl analyze evolution bundled:synthetic_hcn_stdcl bundled:synthetic_hcn_baseline --out evo/\n"
                  "reads RUN/probes (written during training: probe.enabled, the default) or X.probes/ beside an "
                  "exported checkpoint (stdcl export --with-probes)")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directory, checkpoint with probes or bundled:NAME; give two to compare (e.g. STD-CL "
                        "and its baseline)")
    p.add_argument("--out", type=Path, required=True, help="report folder (index.html, PNGs, evolution.json)")
    p.add_argument("--method", default="aligned-umap", choices=["aligned-umap", "procrustes"],
                   help="projections aligned across epochs: AlignedUMAP (default) or Procrustes-aligned PCA (fast)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the projections (default 0)")
    p.add_argument("--n-neighbors", type=int_at_least(2), default=15, help="AlignedUMAP neighbours (default 15)")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="cache folder (default $STDCL_CACHE or ~/.cache/stdcl)")
    p.add_argument("--no-cache", action="store_true", help="recompute and store nothing")
    p.set_defaults(func=_evolution)


def _data_options(args: argparse.Namespace) -> dict:
    return dict(split=args.split, dataset=args.dataset, data_path=args.data_path, modality=args.modality,
                max_samples=args.max_samples, seed=args.seed, device=args.device, batch_size=args.batch_size,
                cache=args.cache, use_cache=not args.no_cache)


def _projection(args: argparse.Namespace) -> dict:
    return dict(method=args.method, n_neighbors=args.n_neighbors, n_epochs=args.n_epochs, metric=args.metric,
                perplexity=args.perplexity)


def _embed(args: argparse.Namespace) -> int:
    from analysis.cli import embed_command

    return embed_command(args.checkpoint, out=args.out, **_data_options(args))


def _project(args: argparse.Namespace) -> int:
    from analysis.cli import project_command

    return project_command(args.checkpoint, out=args.out, spaces=args.spaces, **_projection(args),
                           **_data_options(args))


def _metrics(args: argparse.Namespace) -> int:
    from analysis.cli import metrics_command

    return metrics_command(args.checkpoints, out=args.out, k=args.k, metric_samples=args.metric_samples,
                           **_data_options(args))


def _report(args: argparse.Namespace) -> int:
    from analysis.cli import report_command

    return report_command(args.checkpoints, out=args.out, attribution_samples=args.attribution_samples,
                          **_projection(args), **_data_options(args))


def _evolution(args: argparse.Namespace) -> int:
    from analysis.cli import evolution_command

    return evolution_command(args.runs, out=args.out, method=args.method, seed=args.seed,
                             n_neighbors=args.n_neighbors, cache=args.cache, use_cache=not args.no_cache)
