"""A self-contained HTML report of one checkpoint, or of a (baseline, STD-CL) pair, plus PNGs.

``write_report(out_dir, models, data)`` writes ``out_dir/index.html`` (plotly.js inlined once in
the page head, no network needed to open it) and ``projections.png``, ``confusion.png``,
``twins.png`` (when the classes have twins) and ``attribution.png`` drawn with matplotlib (no
browser needed). The report is built in a temporary folder beside ``out_dir`` and renamed into
place, so a report is either complete or absent; an existing report there is replaced, any
other non-empty folder is left alone (ConfigError).

Sections: summary, projections (spatial, temporal, global side by side per model), separation
metrics per space, the baseline-vs-STD-CL comparison (pair only), twin pairs, confusion (and
its change for a pair), attribution examples, and the definition of the pooled embeddings
whenever a checkpoint without an STD-CL head is shown.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from analysis import figures
from analysis.datasets import AnalysisData, check_compatible, open_analysis_data, stratified_subset
from analysis.embeddings import POOLED_DEFINITION, SPACES, Embeddings, extract_embeddings
from analysis.html_page import Page, check_out_dir, esc, num, table, write_folder
from analysis.models import LoadedModel
from analysis.report_png import PROJECTION_ORDER, pct, write_pngs
from stdcl.errors import ConfigError
from stdcl.logs import progress

GENERATOR = "stdcl analyze report"
SECTIONS = {
    "summary": "Summary",
    "projections": "Projections",
    "metrics": "Separation metrics",
    "comparison": "Baseline vs STD-CL",
    "twins": "Twin pairs",
    "confusion": "Confusion",
    "attributions": "Attribution examples",
    "pooled": "Pooled embeddings",
}
MAX_POINTS = 5000  # points per scatter in the HTML (stratified subset above)

def _as_models(models: LoadedModel | Sequence[LoadedModel]) -> list[LoadedModel]:
    ms = [models] if isinstance(models, LoadedModel) else list(models)
    if not 1 <= len(ms) <= 2 or not all(isinstance(m, LoadedModel) for m in ms):
        raise ConfigError("a report shows one model or a (baseline, STD-CL) pair")
    return ms


# ------------------------------------------------------------------------------------------------ analysis


def _attribution_rows(embs: list[Embeddings], n: int) -> list[int]:
    """Rows worth explaining, at most one per class: for a pair, samples the second model fixes first;
    for one model, its mistakes first; then correct samples of twin classes, then the rest."""
    if n <= 0 or not len(embs[0]):
        return []
    e = embs[0]
    meta = e.class_meta or []
    twin = np.array([k < len(meta) and meta[k].get("twin") is not None for k in range(len(e.class_names))])
    if len(embs) == 2:
        first = ~embs[0].correct & embs[1].correct
    else:
        first = ~e.correct
    priority = np.where(first, 0, np.where(twin[e.labels], 1, 2))
    order = np.lexsort((np.arange(len(e)), priority))
    rows, seen = [], set()
    for r in order:
        if int(e.labels[r]) not in seen:
            rows.append(int(r))
            seen.add(int(e.labels[r]))
        if len(rows) == n:
            break
    return rows


def _attributions(model: LoadedModel, emb: Embeddings, data: AnalysisData, rows: list[int]) -> list[dict[str, Any]]:
    from analysis.attributions import class_centroids, sample_attributions

    centroids = ({b: class_centroids(emb, b) for b in ("spatial", "temporal")} if emb.st_source == "head" else None)
    out = []
    for r in rows:
        x = np.asarray(data.dataset[int(emb.indices[r])][0], dtype=np.float32)
        a = sample_attributions(model, x, centroids, class_index=int(emb.labels[r]))
        spatial = a.get("spatial")
        if spatial is not None and spatial.get("contributions") is not None:
            joints, joint_label = np.asarray(spatial["contributions"]), "share of cos(s, class centroid)"
        else:
            joints, joint_label = np.asarray(a["grad_cam_frames"]).mean(0), "mean Grad-CAM"
        temporal = a.get("temporal")
        curve = None if temporal is None or temporal.get("contributions") is None else \
            np.asarray(temporal["contributions"])
        out.append({"row": r, "x": x, "joints": joints, "joint_label": joint_label, "cam": a["grad_cam_frames"],
                    "curve": curve, "cosine": {b: (a.get(b) or {}).get("cosine") for b in ("spatial", "temporal")},
                    "prediction": a["prediction"], "probability": float(a["probabilities"][a["prediction"]])})
    return out


def analyse(models: Sequence[LoadedModel], data: AnalysisData, indices: np.ndarray | None, method: str, seed: int,
            device: str | None, batch_size: int, cache: str | os.PathLike | None, use_cache: bool,
            attribution_samples: int, projection_params: dict[str, Any]) -> dict[str, Any]:
    """Everything the report shows (embeddings, projections, metrics, confusion, attributions)."""
    from analysis.confusion import confusion, confusion_change
    from analysis.metrics import compare_metrics, space_metrics
    from analysis.projections import project_embeddings
    from analysis.twins import twin_separation

    embs = [extract_embeddings(m, data, indices, batch_size=batch_size, device=device, use_cache=use_cache,
                               cache_root=cache) for m in models]
    jobs = [(i, s) for i in range(len(models)) for s in PROJECTION_ORDER]
    coords: list[dict[str, np.ndarray]] = [{} for _ in models]
    for i, s in progress(jobs, f"{method} projections"):
        coords[i][s] = project_embeddings(embs[i], s, method, use_cache=use_cache, cache_root=cache, seed=seed,
                                          **projection_params)
    pair = len(models) == 2
    pooled = tuple(s for s in ("spatial_pooled", "temporal_pooled") if all(s in e.spaces for e in embs))
    metric_spaces = SPACES + (pooled if pair and any(e.st_source == "head" for e in embs) else ())
    metrics = [space_metrics(e, spaces=metric_spaces, seed=seed, use_cache=use_cache, cache_root=cache)
               for e in progress(embs, "metrics")]
    twins = [twin_separation(e, SPACES) for e in embs]  # [] when the classes have no twins
    conf = [confusion(e) for e in embs]
    rows = _attribution_rows(embs, attribution_samples)
    attributions = [_attributions(m, e, data, rows) for m, e in
                    progress(list(zip(models, embs)), "attributions")]
    return {"embs": embs, "coords": coords, "metrics": metrics, "metric_spaces": metric_spaces,
            "comparison": compare_metrics(metrics[0], metrics[1]) if pair else None, "twins": twins,
            "confusion": conf, "change": confusion_change(embs[0], embs[1]) if pair else None,
            "attribution_rows": rows, "attributions": attributions}


# ------------------------------------------------------------------------------------------------ HTML


def _metric_info() -> dict[str, str]:
    from analysis.metrics import METRIC_INFO

    return {k: f"{v.description} ({v.better} is better)" for k, v in METRIC_INFO.items()}


def _section(key: str) -> str:
    return f'<h2 id="{key}">{SECTIONS[key]}</h2>'


def _html(models: list[LoadedModel], data: AnalysisData, res: dict[str, Any], method: str,
          max_points: int, seed: int) -> str:
    page = Page(GENERATOR)
    embs: list[Embeddings] = res["embs"]
    pair = len(models) == 2
    shown_pooled = any(e.st_source == "pooled" for e in embs)
    keys = ["summary", "projections", "metrics"] + (["comparison"] if pair else []) + \
        (["twins"] if any(res["twins"]) else []) + ["confusion"] + \
        (["attributions"] if res["attribution_rows"] else []) + (["pooled"] if shown_pooled else [])
    title = " vs ".join(m.label for m in models)
    page.add(f"<h1>{esc(title)}</h1><p class=\"note\">{esc(data.describe())}; {len(embs[0])} samples analysed"
             f"{' (stratified subset)' if len(embs[0]) < len(data) else ''}; projections by {esc(method)} "
             f"(seed {seed}); generated {datetime.datetime.now().isoformat(timespec='seconds')} by {GENERATOR}."
             f"</p><nav>" + "".join(f'<a href="#{k}">{SECTIONS[k]}</a>' for k in keys) + "</nav>")

    # summary
    page.add(_section("summary"))
    page.add(table(["model", "kind", "encoder", "STD-CL", "spatial/temporal spaces", "samples", "top-1", "top-5"],
                    [[m.label, m.kind, m.encoder.name, "yes" if m.stdcl else "no (baseline)",
                      "trained head" if e.st_source == "head" else "pooled (see below)", len(e),
                      pct(c["top1"]), pct(c["top5"])] for m, e, c in zip(models, embs, res["confusion"])]))

    # projections
    page.add(_section("projections"))
    page.add('<p class="note">Each point is a sample, coloured by its true class; spaces side by side. Hover for '
             "the name, label and prediction.</p>")
    for m, e, coords in zip(models, embs, res["coords"]):
        figs = [figures.embedding_scatter(coords[s], e, "label", title=f"{m.label}: {s}", max_points=max_points,
                                          seed=seed, height=460) for s in PROJECTION_ORDER]
        for f in figs[:-1]:
            f.update_layout(showlegend=False)
        page.add('<div class="grid g3">' + "".join(f"<div>{page.fig(f)}</div>" for f in figs) + "</div>")

    # metrics
    info = _metric_info()
    page.add(_section("metrics"))
    for m, mm in zip(models, res["metrics"]):
        names = list(dict.fromkeys(k for v in mm.values() for k in v["overall"]))
        page.add(f"<h3>{esc(m.label)}</h3>")
        page.add(table(["space"] + names, [[s] + [num(v["overall"].get(k)) for k in names] for s, v in mm.items()]))
    if info:
        page.add('<p class="note">' + "<br>".join(f"<b>{esc(k)}</b>: {esc(v)}" for k, v in info.items()) + "</p>")
    sims = []
    for m, mm in zip(models, res["metrics"]):
        for s in ("spatial", "temporal"):
            sim = mm.get(s, {}).get("centroid_similarity")
            if sim is not None:
                sims.append(figures.similarity_matrix_figure(np.asarray(sim), embs[0].class_names,
                                                             f"{m.label}: {s} class-centroid cosine", height=480))
    if sims:
        page.add('<div class="grid g2">' + "".join(f"<div>{page.fig(f)}</div>" for f in sims) + "</div>")

    # comparison
    if pair:
        a, b = models
        page.add(_section("comparison"))
        page.add(f'<p class="note">{esc(a.label)} (A) against {esc(b.label)} (B) on the same '
                 f"{len(embs[0])} samples. Spaces suffixed <i>_pooled</i> are the parameter-free pooled embeddings "
                 f"of both encoders (definition below): they compare the encoders on equal terms.</p>")
        rows = res["comparison"]

        def better(r):
            w = r.get("better")
            cls = "good" if w == "b" else "bad" if w == "a" else ""
            label = {"a": a.label, "b": b.label}.get(w, w or "-")
            return ("html", f'<span class="{cls}">{esc(label)}</span>')
        page.add(table(["space", "metric", f"A: {a.label}", f"B: {b.label}", "B - A", "better"],
                        [[r["space"], r["metric"], num(r["a"]), num(r["b"]), num(r["delta"], signed=True),
                          better(r)] for r in rows], left=2))
        page.add(page.fig(figures.metrics_bar(rows, a.label, b.label, title="A vs B per metric and space")))
        if shown_pooled:
            page.add(f'<p class="note"><b>Pooled embeddings.</b> {esc(POOLED_DEFINITION)}</p>')

    # twins
    if any(res["twins"]):
        page.add(_section("twins"))
        page.add('<p class="note">Each twin pair is two classes that differ only spatially (mirrored) or only '
                 "temporally (reversed, faster, reordered). A spatial twin should separate in the spatial space, "
                 "a temporal twin in the temporal space.</p>")
        twin_metrics = list(dict.fromkeys(k for r in res["twins"][0] for sp in r["spaces"].values() for k in sp))
        twin_figs = []
        for m, rows in zip(models, res["twins"]):
            if not rows:
                continue
            page.add(f"<h3>{esc(m.label)}</h3>")
            header = ["pair", "type"] + [f"{s} {k}" for s in SPACES for k in twin_metrics]
            page.add(table(header, [[r["pair"], r["type"]] + [num(r["spaces"].get(s, {}).get(k))
                                                             for s in SPACES for k in twin_metrics] for r in rows],
                            left=2))
            metric = "knn_accuracy" if "knn_accuracy" in twin_metrics else twin_metrics[0]
            twin_figs.append(figures.twin_pairs_figure(rows, metric, f"{m.label}: twin-pair {metric}"))
        page.add(f'<div class="grid g{len(twin_figs)}">' + "".join(f"<div>{page.fig(f)}</div>" for f in twin_figs)
                 + "</div>")

    # confusion
    page.add(_section("confusion"))
    cfigs = [figures.confusion_figure(c["matrix"], c["class_names"], title=f"{m.label} (top-1 {pct(c['top1'])})")
             for m, c in zip(models, res["confusion"])]
    page.add(f'<div class="grid g{len(cfigs)}">' + "".join(f"<div>{page.fig(f)}</div>" for f in cfigs) + "</div>")
    if pair:
        ch = res["change"]
        k = len(ch["class_names"])
        delta = figures.normalise_rows(res["confusion"][1]["matrix"]) - figures.normalise_rows(
            res["confusion"][0]["matrix"])
        page.add(f"<h3>Change from {esc(models[0].label)} to {esc(models[1].label)}</h3>")
        page.add(f'<p class="note">top-1 {pct(ch["top1"]["a"])} &rarr; {pct(ch["top1"]["b"])}; '
                 f'{len(ch["fixed"])} samples fixed, {len(ch["broken"])} broken. Blue cells gained, red lost '
                 "(row shares).</p>")
        page.add('<div class="grid g2"><div>' + page.fig(figures.confusion_change_figure(
            delta, ch["class_names"], "row-normalised B - A")) + "</div><div>" + table(
            ["class", "samples", "A", "B", "B - A"],
            [[r["name"], r["support"], pct(r["a"]), pct(r["b"]),
              "-" if r["delta"] is None else f"{100 * r['delta']:+.2f}"] for r in ch["per_class"][:k]])
            + "</div></div>")

    # attributions
    if res["attribution_rows"]:
        page.add(_section("attributions"))
        page.add('<p class="note">Per sample: the skeleton with each joint coloured by its exact share of the '
                 "cosine between the spatial embedding and the true class's centroid (STD-CL head), or by the mean "
                 "Grad-CAM over frames (baseline); the frames x joints Grad-CAM of the true class; for STD-CL, each "
                 "feature-map frame's share of the temporal cosine. Press play to animate.</p>")
        e0 = embs[0]
        for j, r in enumerate(res["attribution_rows"]):
            label = e0.class_names[e0.labels[r]]
            preds = "; ".join(f"{esc(m.label)}: {esc(e.class_names[e.predictions[r]])}"
                              for m, e in zip(models, embs))
            page.add(f"<h3>{esc(e0.names[r])}: {esc(label)}</h3><p class=\"note\">predicted by {preds}</p>")
            for m, atts in zip(models, res["attributions"]):
                a = atts[j]
                cos = ", ".join(f"{b} cosine to the class centroid {num(v, 3)}" for b, v in a["cosine"].items()
                                if v is not None)
                if not np.asarray(a["cam"]).max(initial=0.0) > 0:
                    cos = (cos + "; " if cos else "") + ("Grad-CAM is zero everywhere for this sample: no channel "
                                                         "of the last map adds positive evidence for the class")
                page.add(f"<h4>{esc(m.label)}</h4>" + (f'<p class="note">{cos}</p>' if cos else ""))
                figs = [figures.skeleton_figure(a["x"], data.layout, a["joints"], value_label="joint",
                                                title=a["joint_label"], height=460),
                        figures.frames_joints_heatmap(a["cam"], data.layout, "Grad-CAM (frames x joints)",
                                                      value_label="Grad-CAM", height=460)]
                if a["curve"] is not None:
                    figs.append(figures.contribution_curve(a["curve"], "share of cos(t, class centroid) per map frame",
                                                           xlabel="feature-map frame", height=460))
                page.add(f'<div class="grid g{len(figs)}">' + "".join(f"<div>{page.fig(f)}</div>" for f in figs)
                         + "</div>")

    if shown_pooled:
        page.add(_section("pooled"))
        which = ", ".join(m.label for m, e in zip(models, embs) if e.st_source == "pooled")
        page.add(f'<p class="note">{esc(which)} has no STD-CL head: its spatial and temporal spaces are the pooled '
                 f"embeddings. {esc(POOLED_DEFINITION)}</p>")
    return page.render(f"{title}: stdcl report")


# ------------------------------------------------------------------------------------------------ entry point


def write_report(out_dir: str | os.PathLike, models: LoadedModel | Sequence[LoadedModel],
                 data: AnalysisData | None = None, max_samples: int | None = None, method: str = "umap", *,
                 split: str = "test", seed: int = 0, device: str | None = None, batch_size: int = 64,
                 cache: str | os.PathLike | None = None, use_cache: bool = True, attribution_samples: int = 3,
                 projection_params: dict[str, Any] | None = None, max_points: int = MAX_POINTS) -> Path:
    """Write the report of ``models`` (one, or a (baseline, STD-CL) pair) on ``data`` (default: the first
    model's ``split``) to ``out_dir``; ``max_samples`` analyses a stratified subset. Returns ``index.html``."""
    ms = _as_models(models)
    out = Path(out_dir).expanduser()
    check_out_dir(out, GENERATOR)
    if data is None:
        data = open_analysis_data(ms[0], split)
    for m in ms:
        check_compatible(m, data)
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"max_samples must be at least 1, got {max_samples}")
    indices = None if max_samples is None or max_samples >= len(data) else \
        stratified_subset(data.labels, max_samples, seed)
    res = analyse(ms, data, indices, method, seed, device, batch_size, cache, use_cache, attribution_samples,
                  dict(projection_params or {}))

    def fill(tmp: Path) -> None:
        (tmp / "index.html").write_text(_html(ms, data, res, method, max_points, seed), encoding="utf-8")
        write_pngs(tmp, ms, res, data.layout)

    return write_folder(out, GENERATOR, fill) / "index.html"
