"""The teaching walkthrough: one sample through the encoder and the STD-CL head, step by step.

:func:`walk_sample` returns what each step of the method produces for one sample: the encoder's
feature map (its shape and where it is active), the map pooled over frames (one C'-vector per
joint, what the spatial branch reads), pooled over joints (one C'-vector per frame, what the
temporal branch reads) and the two embeddings (the trained head's ``s`` and ``t`` for an STD-CL
checkpoint, the parameter-free pooled ones, :data:`analysis.embeddings.POOLED_DEFINITION`, for a
baseline). The per-joint / per-frame matrices are the pooled embeddings reshaped, so they are
the same numbers the Embeddings page projects.

:func:`contrast_partners` says what the contrastive loss does to that sample in one space, over
the analysed split: its hardest positives (same class, least similar) and hardest negatives
(other classes, most similar) by cosine similarity, and the hard-mined InfoNCE value it would
get with the split as the memory bank (:func:`anchor_loss`). :func:`twin_contrast` compares a
synthetic sample's similarity to its own class and to its twin class in each space.

Small plotly builders for these views sit at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from analysis.embeddings import Embeddings, embed_batch
from analysis.models import LoadedModel
from analysis.neighbours import cosine_to_row
from stdcl.errors import ConfigError
from stdcl.head.loss import hard_mined_infonce, l2_normalize


@dataclass
class SampleWalk:
    """One sample's way through the encoder and the head (all arrays float32, persons averaged)."""

    feature_shape: tuple[int, int, int]  # (C', T', V')
    persons: int  # M
    activity: np.ndarray  # (T', V'): mean |X| over channels and persons, where the map is active
    per_joint: np.ndarray  # (C', V'): X averaged over frames (and persons)
    per_frame: np.ndarray  # (C', T'): X averaged over joints (and persons)
    spatial: np.ndarray  # (d,) the spatial embedding (head's s, or the pooled one)
    temporal: np.ndarray  # (d,) the temporal embedding
    st_source: str  # "head" or "pooled"
    logits: np.ndarray  # (K,)

    @property
    def prediction(self) -> int:
        return int(self.logits.argmax())


def walk_sample(model: LoadedModel, x: np.ndarray | torch.Tensor) -> SampleWalk:
    """Every step of the method for one sample ``x`` ``(C, T, V, M)`` (eval mode, no gradients)."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x).float()
    if xt.dim() != 4:
        raise ConfigError(f"{model.label}: expected one sample (C, T, V, M), got shape {tuple(xt.shape)}")
    xb = xt[None].to(next(model.encoder.parameters()).device)
    out = embed_batch(model, xb)  # eval mode, no grad
    with torch.no_grad():
        fmap = model.encoder.features(xb).map[0].float()  # (M, C', T', V')
    m, c, t, v = fmap.shape
    def np_(a: torch.Tensor) -> np.ndarray:
        return a.detach().float().cpu().numpy()

    return SampleWalk(
        feature_shape=(int(c), int(t), int(v)), persons=int(m),
        activity=np_(fmap.abs().mean(dim=(0, 1))),
        per_joint=np_(out["spatial_pooled"][0]).reshape(c, v),
        per_frame=np_(out["temporal_pooled"][0]).reshape(c, t),
        spatial=np_(out["spatial"][0]), temporal=np_(out["temporal"][0]),
        st_source="head" if model.head is not None else "pooled", logits=np_(out["logits"][0]))


# -- what the loss pulls together and pushes apart --------------------------------------------------

def _records(emb: Embeddings, rows: np.ndarray, sims: np.ndarray) -> list[dict[str, Any]]:
    names, preds = emb.class_names, emb.predictions
    return [{"rank": i + 1, "row": int(r), "name": emb.names[r], "label": int(emb.labels[r]),
             "class": names[int(emb.labels[r])], "predicted_class": names[int(preds[r])], "cosine": float(sims[r])}
            for i, r in enumerate(rows)]


def hardest_partners(emb: Embeddings, row: int, space: str, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(positive rows, negative rows)``: the ``k`` same-class samples least cosine-similar to ``row``
    (itself excluded) and the ``k`` other-class samples most similar; ties broken by the lower row."""
    if int(k) < 1:
        raise ConfigError(f"number of partners must be at least 1, got {k}")
    sims = cosine_to_row(emb, row, space)
    rows = np.arange(len(emb))
    same = (emb.labels == emb.labels[int(row)]) & (rows != int(row))
    pos, neg = rows[same], rows[emb.labels != emb.labels[int(row)]]
    pos = pos[np.lexsort((pos, sims[pos]))][:k]
    neg = neg[np.lexsort((neg, -sims[neg]))][:k]
    return pos.astype(np.int64), neg.astype(np.int64)


def anchor_loss(emb: Embeddings, row: int, space: str, num_pos: int = 128, num_neg: int = 512, tau: float = 0.8,
                seed: int = 0) -> dict[str, Any] | None:
    """The released hard-mined InfoNCE of sample ``row`` with the whole split as the memory bank
    (:func:`stdcl.head.loss.hard_mined_infonce`; the anchor's own slot counts among its positives, as
    in training). ``P`` and ``K`` are capped by what the split holds; random negatives are seeded.
    None when the split has no negative."""
    labels = torch.as_tensor(np.asarray(emb.labels, dtype=np.int64))
    y = int(labels[int(row)])
    n_pos, n_neg = int((labels == y).sum()), int((labels != y).sum())
    if n_neg == 0:
        return None
    p, k = min(int(num_pos), n_pos), min(int(num_neg), n_neg)
    bank = l2_normalize(torch.as_tensor(np.asarray(emb.space(space), dtype=np.float32)))
    gen = torch.Generator().manual_seed(int(seed))
    loss, valid = hard_mined_infonce(bank[int(row)][None], labels[int(row)][None], bank, labels,
                                     torch.ones(len(labels), dtype=torch.bool), p, k, tau, generator=gen)
    return {"loss": float(loss), "num_pos": p, "num_neg": k, "tau": float(tau), "valid": bool(valid[0]),
            "capped": p < num_pos or k < num_neg}


def contrast_partners(emb: Embeddings, row: int, space: str, k: int = 5, num_pos: int = 128, num_neg: int = 512,
                      tau: float = 0.8) -> dict[str, Any]:
    """What the contrastive loss does to sample ``row`` in ``space``: ``positives`` / ``negatives``
    (records: rank, row, name, label, class, predicted_class, cosine), ``mean_positive`` /
    ``mean_negative`` cosines (NaN when there is none) and ``loss`` (:func:`anchor_loss`)."""
    sims = cosine_to_row(emb, row, space)
    pos, neg = hardest_partners(emb, row, space, k)
    same = emb.labels == emb.labels[int(row)]
    same_others = same.copy()
    same_others[int(row)] = False
    return {"space": space, "positives": _records(emb, pos, sims), "negatives": _records(emb, neg, sims),
            "num_positives": int(same_others.sum()), "num_negatives": int((~same).sum()),
            "mean_positive": float(sims[same_others].mean()) if same_others.any() else float("nan"),
            "mean_negative": float(sims[~same].mean()) if (~same).any() else float("nan"),
            "loss": anchor_loss(emb, row, space, num_pos, num_neg, tau)}


def class_similarity(emb: Embeddings, row: int, space: str) -> np.ndarray:
    """``(K,)`` mean cosine similarity of sample ``row`` to the samples of each class (itself excluded;
    NaN for a class without other samples)."""
    sims = cosine_to_row(emb, row, space)
    keep = np.ones(len(emb), bool)
    keep[int(row)] = False
    k = len(emb.class_names)
    sums = np.bincount(emb.labels[keep], weights=sims[keep], minlength=k)[:k]
    counts = np.bincount(emb.labels[keep], minlength=k)[:k]
    return np.divide(sums, counts, out=np.full(k, np.nan), where=counts > 0)


def twin_contrast(emb: Embeddings, row: int, spaces: Sequence[str] = ("spatial", "temporal")) -> dict[str, Any] | None:
    """For a class with a twin (synthetic set): the twin, its type and texts, and per space the mean
    cosine to the own class and to the twin class and their ``margin`` (own - twin). None otherwise."""
    meta = emb.class_meta
    label = int(emb.labels[int(row)])
    if not meta or label >= len(meta) or meta[label].get("twin") is None:
        return None
    twin = int(meta[label]["twin"])
    per_space = {}
    for s in spaces:
        if s in emb.spaces:
            sim = class_similarity(emb, row, s)
            per_space[s] = {"own": float(sim[label]), "twin": float(sim[twin]),
                            "margin": float(sim[label] - sim[twin])}
    return {"label": label, "twin": twin, "twin_type": meta[label].get("twin_type"),
            "contrast": meta[label].get("contrast", ""), "description": meta[label].get("description", ""),
            "twin_description": meta[twin].get("description", "") if twin < len(meta) else "",
            "spaces": per_space}


# -- figures ----------------------------------------------------------------------------------------

def channel_heatmap(values: np.ndarray, axis_labels: Sequence[str] | None = None, axis_title: str = "joint",
                    title: str = "", value_label: str = "mean activation", height: int = 420,
                    center: bool = False) -> go.Figure:
    """A channels x positions matrix ``values`` ``(C', L)``: channels down, joints or frames across.

    ``center`` subtracts each channel's mean over the positions, so the colours show how the joints
    (frames) differ rather than how the channels do.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ConfigError(f"channel heatmap needs a (C', L) matrix, got shape {values.shape}")
    if center:
        values = values - values.mean(1, keepdims=True)
    xs = list(axis_labels) if axis_labels is not None else list(range(values.shape[1]))
    if len(xs) != values.shape[1]:
        raise ConfigError(f"{len(xs)} labels for {values.shape[1]} {axis_title}s")
    diverging = bool((values < 0).any() and (values > 0).any())
    fig = go.Figure(go.Heatmap(z=values, x=xs, y=np.arange(values.shape[0]),
                               colorscale="RdBu_r" if diverging else "Viridis", zmid=0 if diverging else None,
                               colorbar=dict(title=dict(text=value_label)),
                               hovertemplate=axis_title + " %{x}<br>channel %{y}<br>" + value_label
                               + ": %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title or None, height=height, xaxis_title=axis_title, yaxis_title="channel",
                      yaxis=dict(autorange="reversed"), margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


def embedding_strips(vectors: Mapping[str, np.ndarray], title: str = "", height: int = 220) -> go.Figure:
    """Embeddings as one coloured strip each (rows named by ``vectors``' keys, dimensions across;
    a shorter vector is padded with blanks)."""
    names = list(vectors)
    if not names:
        raise ConfigError("no embeddings to draw")
    rows = [np.ravel(np.asarray(vectors[n], dtype=np.float64)) for n in names]
    z = np.full((len(rows), max(len(r) for r in rows)), np.nan)
    for i, r in enumerate(rows):
        z[i, :len(r)] = r
    fig = go.Figure(go.Heatmap(z=z, y=names, colorscale="RdBu_r", zmid=0, colorbar=dict(title=dict(text="value")),
                               hovertemplate="%{y}[%{x}] = %{z:.4g}<extra></extra>"))
    fig.update_layout(title=title or None, height=height, xaxis_title="dimension", yaxis=dict(autorange="reversed"),
                      margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


def class_similarity_figure(similarities: Mapping[str, np.ndarray], class_names: Sequence[str], own: int,
                            twin: int | None = None, title: str = "", height: int = 380) -> go.Figure:
    """Grouped bars: mean cosine to each class, one group per space; the own (and twin) class outlined."""
    fig = go.Figure()
    outline = ["black" if k == own else "#d62728" if k == twin else "rgba(0,0,0,0)" for k in range(len(class_names))]
    for space, sims in similarities.items():
        sims = np.asarray(sims, dtype=np.float64)
        if sims.shape != (len(class_names),):
            raise ConfigError(f"{space}: {sims.shape} similarities for {len(class_names)} classes")
        fig.add_trace(go.Bar(x=list(class_names), y=sims, name=space, marker=dict(line=dict(color=outline, width=2)),
                             hovertemplate="%{x}<br>" + space + " mean cosine: %{y:.3f}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.update_layout(title=title or None, height=height, barmode="group", yaxis_title="mean cosine",
                      xaxis_tickangle=-40, plot_bgcolor="white", margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


def add_query_marker(fig: go.Figure, xy: Sequence[float], name: str = "your sequence") -> go.Figure:
    """Add a large star at ``xy`` (a placed new sample) to a 2-D scatter; returns ``fig``."""
    fig.add_trace(go.Scatter(x=[float(xy[0])], y=[float(xy[1])], mode="markers", name=name,
                             marker=dict(symbol="star", size=22, color="gold", line=dict(width=2, color="black")),
                             hovertemplate=name + "<extra></extra>"))
    return fig
