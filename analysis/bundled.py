"""The bundled demo: where its checkpoints live, and the precomputed projections shipped with them.

The default pair of the app (HCN with STD-CL and its baseline, on the synthetic test split) ships
its training evolutions in ``checkpoints/cache/evolution`` and its 2-D UMAP projections in
``checkpoints/cache/projections`` (a few kB each, under the same keys
as the on-disk cache): the first Embeddings page of a fresh install then waits neither for UMAP
nor for its one-off compilation. :func:`analysis.projections.project_embeddings` reads them when
the user's cache lacks an entry. They are keyed by the checkpoints' content and the code's cache
versions, so a change to either makes them unused (never wrong); ``python -m analysis.bundled``
writes them again, and a test fails while they are stale.
"""

from __future__ import annotations

import os
from pathlib import Path

from stdcl.weights import BUNDLED_DIR  # one definition: the loader's

BUNDLED_CACHE = BUNDLED_DIR / "cache"
#: The app's default pair (``app.state.DEFAULT_MODEL`` and its baseline) and what is precomputed for it.
DEMO_PAIR = ("synthetic_hcn_stdcl", "synthetic_hcn_baseline")
DEMO_SPACES = ("spatial", "temporal", "global")
DEMO_METHOD = "umap"
DEMO_MAX_SAMPLES = 10_000  # app.state.DEFAULT_MAX_SAMPLES (the synthetic test split is smaller: all of it)


def demo_projection_keys() -> dict[tuple[str, str], str]:
    """``{(checkpoint, space): cache key}`` of the demo projections as this code computes them."""
    from analysis.datasets import open_analysis_data
    from analysis.embeddings import embeddings_key
    from analysis.models import bundled_models, load_model
    from analysis.projections import projection_key

    refs = {r.label: r for r in bundled_models()}
    out = {}
    for name in DEMO_PAIR:
        model = load_model(refs[name])
        data = open_analysis_data(model, "test")
        if len(data) > DEMO_MAX_SAMPLES:
            raise RuntimeError(f"{name}: the demo split has {len(data)} samples, more than {DEMO_MAX_SAMPLES}")
        key = embeddings_key(model, data, None)
        out.update({(name, s): projection_key(key, s, DEMO_METHOD) for s in DEMO_SPACES})
    return out


def write_demo_cache(root: str | os.PathLike = BUNDLED_CACHE) -> list[Path]:
    """Compute the demo pair's projections and store them under ``root`` (returns the files written)."""
    from analysis.cache import entry_path
    from analysis.datasets import open_analysis_data
    from analysis.embeddings import extract_embeddings
    from analysis.models import bundled_models, load_model
    from analysis.projections import project_embeddings, projection_key

    refs = {r.label: r for r in bundled_models()}
    written = []
    for name in DEMO_PAIR:
        model = load_model(refs[name])
        emb = extract_embeddings(model, open_analysis_data(model, "test"))
        for space in DEMO_SPACES:
            project_embeddings(emb, space, DEMO_METHOD, cache_root=root)  # computed and stored under root
            written.append(entry_path("projections", projection_key(emb.key, space, DEMO_METHOD), root))
    return written


def demo_evolution_keys() -> dict[str, str]:
    """``{checkpoint: cache key}`` of the demo pair's training evolutions (Procrustes, every probed space)."""
    from analysis.evolution import evolution_key
    from stdcl.train.probes import read_probes
    from stdcl.weights import bundled_path

    return {name: evolution_key(bundled_path(name), "procrustes", read_probes(bundled_path(name)).spaces)
            for name in DEMO_PAIR}


def write_demo_evolutions(root: str | os.PathLike = BUNDLED_CACHE) -> list[Path]:
    """Compute the demo pair's training evolutions (the Training evolution page's default) under ``root``."""
    from analysis.cache import entry_path
    from analysis.evolution import load_evolution
    from stdcl.weights import bundled_path

    for name in DEMO_PAIR:
        load_evolution(bundled_path(name), "procrustes", cache_root=root)
    return [entry_path("evolution", key, root) for key in demo_evolution_keys().values()]


if __name__ == "__main__":
    for p in write_demo_evolutions():
        print(p)
    for p in write_demo_cache():
        print(p)
