"""Where a model looks: exact per-joint / per-frame decomposition of the STD-CL embeddings,
Grad-CAM over the encoder's last map, the head's attention weights and learned joint relations.

Decomposition (STD-CL checkpoints only). Each head branch is linear after pooling, so the
spatial embedding is exactly ``s = sum_j a_j + b`` (one term ``a_j`` per joint of the map,
``b`` the projection bias) and the temporal one ``t = sum_f a_f + b`` (one term per frame of
the map); see :meth:`stdcl.head.decoupling.DecouplingHead.contributions`. Against a reference
vector ``c`` (by default the class centroid of the embeddings, :func:`class_centroids`) the
cosine splits the same way::

    cos(s, c) = sum_j (a_j . c) / (|s| |c|) + (b . c) / (|s| |c|)

so per-position parts plus the bias part add up to the cosine exactly.

Grad-CAM (every encoder): the gradient of one class logit with respect to the encoder's last
map ``features(x).map`` ``(N, M, C', T', V')``; channel weights are the mean gradient over
``(T', V')`` per person, the map is the ReLU of the weighted channel sum, summed over persons
and divided by its maximum per sample (so it lies in ``[0, 1]``; an all-zero map stays zero).
The map's joint axis is the input's joint axis for every encoder (HCN included, see
:mod:`stdcl.encoders.hcn`); its time axis is resampled to the input frames by
:func:`cam_to_frames`.

Every function runs the model in eval mode, restores the training flags afterwards and leaves
no ``.grad`` on any parameter.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from analysis.embeddings import Embeddings
from analysis.models import LoadedModel
from stdcl.encoders.base import Features
from stdcl.errors import ConfigError
from stdcl.vectors import unit_rows

#: Which head branch reads which axis of the map ``(C', T', V')``.
BRANCH_AXIS = {"spatial": "joint", "temporal": "frame"}


# -- plumbing ---------------------------------------------------------------------------------------

@contextmanager
def _eval_mode(model: LoadedModel) -> Iterator[None]:
    """Encoder (and head) in eval mode for the block; the previous training flags restored after."""
    mods = [m for m in (model.encoder, model.head) if m is not None]
    flags = [m.training for m in mods]
    for m in mods:
        m.eval()
    try:
        yield
    finally:
        for m, f in zip(mods, flags):
            m.train(f)


def _as_batch(model: LoadedModel, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``x`` as a float32 tensor ``(N, C, T, V, M)`` on the encoder's device (one-line error otherwise)."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.dim() != 5:
        raise ConfigError(f"{model.label}: expected a batch (N, C, T, V, M), got shape {tuple(x.shape)}")
    device = next(model.encoder.parameters()).device
    return x.detach().to(device=device, dtype=torch.float32)


def _features(model: LoadedModel, x: torch.Tensor) -> Features:
    with torch.no_grad():
        return model.encoder.features(x)


def _require_head(model: LoadedModel) -> None:
    if model.head is None:
        raise ConfigError(f"{model.label}: a baseline checkpoint has no STD-CL head, so its embeddings have no "
                          f"exact per-joint / per-frame decomposition (use Grad-CAM instead)")


# -- exact decomposition ----------------------------------------------------------------------------

def _decompose_map(model: LoadedModel, fmap: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
    with torch.no_grad():
        parts = model.head.contributions(fmap)
        emb = model.head(fmap)
    return {k: {"terms": terms.float().cpu().numpy(), "bias": bias.detach().float().cpu().numpy(),
                "embedding": emb[k].float().cpu().numpy()} for k, (terms, bias) in parts.items()}


def decompose(model: LoadedModel, x: torch.Tensor | np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per branch: ``terms`` ``(N, L, D)`` (``L`` = V' joints for ``spatial``, T' frames for ``temporal``),
    ``bias`` ``(D,)`` and ``embedding`` ``(N, D)``, with ``terms.sum(1) + bias == embedding``.

    ConfigError for a model without an STD-CL head.
    """
    _require_head(model)
    x = _as_batch(model, x)
    with _eval_mode(model):
        return _decompose_map(model, _features(model, x).map)


def similarity_contributions(terms: np.ndarray, bias: np.ndarray,
                             reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``cos(terms.sum(1) + bias, reference)`` into per-position parts ``(N, L)`` and a bias part ``(N,)``.

    ``reference`` is one vector ``(D,)`` or one per sample ``(N, D)``. Parts sum to the cosine exactly
    (computed in float64); where the embedding or the reference is zero the cosine is undefined and
    all parts are 0.
    """
    terms = np.asarray(terms, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if terms.ndim != 3 or bias.shape != terms.shape[2:]:
        raise ConfigError(f"similarity_contributions: expected terms (N, L, D) and bias (D,), got "
                          f"{terms.shape} and {bias.shape}")
    n, _, d = terms.shape
    if ref.shape == (d,):
        ref = np.broadcast_to(ref, (n, d))
    if ref.shape != (n, d):
        raise ConfigError(f"similarity_contributions: reference must be ({d},) or ({n}, {d}), got {ref.shape}")
    s = terms.sum(1) + bias
    denom = np.linalg.norm(s, axis=1) * np.linalg.norm(ref, axis=1)
    scale = np.divide(1.0, denom, out=np.zeros(n), where=denom > 0)
    per_position = np.einsum("nld,nd->nl", terms, ref) * scale[:, None]
    bias_part = (ref @ bias) * scale
    return per_position, bias_part


def class_centroids(emb: Embeddings, space: str) -> np.ndarray:
    """``(K, d)`` float32: the mean of the L2-normalised embeddings of each true class in ``space``.

    A class without samples (or whose embeddings are all zero) gets a zero row, so downstream
    cosines against it are 0 rather than NaN.
    """
    unit = unit_rows(np.asarray(emb.space(space), dtype=np.float64))
    k = len(emb.class_names)
    sums = np.zeros((k, unit.shape[1]))
    np.add.at(sums, np.asarray(emb.labels, dtype=np.int64), unit)
    counts = np.bincount(np.asarray(emb.labels, dtype=np.int64), minlength=k)[:k]
    return np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0).astype(np.float32)


# -- Grad-CAM ---------------------------------------------------------------------------------------

def cam_to_frames(cam: np.ndarray, frames: int) -> np.ndarray:
    """Resample ``cam`` ``(N, T', V)`` to ``(N, frames, V)`` by linear interpolation over time.

    Input frame ``i`` reads map position ``i * (T' - 1) / (frames - 1)`` (first and last frames
    map to the first and last positions, so the endpoints are kept and a constant stays constant).
    """
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim != 3 or frames < 1:
        raise ConfigError(f"cam_to_frames: expected (N, T', V) and frames >= 1, got {cam.shape} and {frames}")
    t = cam.shape[1]
    if t == frames:
        return cam.astype(np.float32)
    pos = np.linspace(0.0, t - 1, frames) if frames > 1 else np.zeros(1)
    lo = np.floor(pos).astype(int).clip(0, t - 1)
    hi = np.minimum(lo + 1, t - 1)
    w = (pos - lo)[None, :, None]
    return ((1 - w) * cam[:, lo] + w * cam[:, hi]).astype(np.float32)


def _grad_cam_features(model: LoadedModel, feats: Features, frames: int,
                       class_index: int | np.ndarray | None) -> dict[str, np.ndarray]:
    enc = model.encoder
    fmap = feats.map.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = enc.classify(Features(fmap, feats.extra))
        n, k = logits.shape
        if class_index is None:
            cls = logits.detach().argmax(1)
        else:
            ids = np.asarray(class_index, dtype=np.int64).reshape(-1)
            if ids.size == 1:
                ids = np.repeat(ids, n)
            if ids.shape != (n,) or (n and (ids.min() < 0 or ids.max() >= k)):
                raise ConfigError(f"{model.label}: class_index must be one class or one per sample ({n}), "
                                  f"each in 0..{k - 1}; got {class_index}")
            cls = torch.as_tensor(ids, device=logits.device)
        # each sample's logit depends on its own map only (eval mode), so one backward gives all gradients
        (grad,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), fmap)
    with torch.no_grad():
        weights = grad.mean(dim=(3, 4), keepdim=True)  # (N, M, C', 1, 1)
        cam = torch.relu((weights * fmap).sum(2)).sum(1)  # (N, T', V')
        peak = cam.flatten(1).amax(1).clamp_min(torch.finfo(cam.dtype).tiny)
        cam = cam / peak[:, None, None]
    cam_np = cam.float().cpu().numpy()
    return {"cam": cam_np, "frames": cam_to_frames(cam_np, frames), "class_index": cls.cpu().numpy(),
            "logits": logits.detach().float().cpu().numpy()}


def grad_cam(model: LoadedModel, x: torch.Tensor | np.ndarray,
             class_index: int | np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Grad-CAM of ``class_index`` (one int, one per sample, or None for the predicted class).

    Returns ``cam`` ``(N, T', V')`` in ``[0, 1]``, ``frames`` ``(N, T, V)`` (``cam`` resampled to the
    input frames, :func:`cam_to_frames`), ``class_index`` ``(N,)`` and ``logits`` ``(N, K)``.
    """
    x = _as_batch(model, x)
    with _eval_mode(model):
        return _grad_cam_features(model, _features(model, x), x.shape[2], class_index)


# -- attention and relations ------------------------------------------------------------------------

def _attention_map(model: LoadedModel, fmap: torch.Tensor) -> dict[str, np.ndarray] | None:
    if model.head is None:
        return None
    with torch.no_grad():
        w = model.head.attention_weights(fmap)
    return None if w is None else {k: v.float().cpu().numpy() for k, v in w.items()}


def attention_weights(model: LoadedModel, x: torch.Tensor | np.ndarray) -> dict[str, np.ndarray] | None:
    """The head's per-person softmax weights (``spatial`` ``(N, M, V')``, ``temporal`` ``(N, M, T')``);
    None for a baseline or a head with mean pooling."""
    if model.head is None or model.head.pooling != "attention":
        return None
    x = _as_batch(model, x)
    with _eval_mode(model):
        return _attention_map(model, _features(model, x).map)


def joint_relations(model: LoadedModel, x: torch.Tensor | np.ndarray) -> list[np.ndarray] | None:
    """The encoder's per-layer ``(V, V)`` joint relation maps for ``x`` (averaged over its samples),
    or None when the encoder learns none (HCN)."""
    x = _as_batch(model, x)
    with _eval_mode(model), torch.no_grad():
        rel = model.encoder.joint_relations(x)
    return None if rel is None else [r.detach().float().cpu().numpy() for r in rel]


# -- one sample, everything the Attention page shows ------------------------------------------------

def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def sample_attributions(model: LoadedModel, x: torch.Tensor | np.ndarray,
                        centroids: dict[str, np.ndarray] | None = None,
                        class_index: int | None = None) -> dict[str, Any]:
    """Everything about one sample ``x`` ``(C, T, V, M)`` in one forward pass.

    ``class_index`` (default: the predicted class) is the class Grad-CAM explains and whose
    centroid (``centroids[branch]`` ``(K, D)``, e.g. :func:`class_centroids` of the same model's
    embeddings) is the cosine reference. Keys:

    - ``logits`` ``(K,)``, ``probabilities`` ``(K,)``, ``prediction``, ``class_index``, ``feature_shape``
    - ``spatial`` / ``temporal``: None for a baseline, else ``{"axis", "term_norms" (L,), "embedding_norm",
      "bias_norm", "contributions" (L,) | None, "bias_contribution" | None, "cosine" | None}`` with
      ``contributions.sum() + bias_contribution == cosine`` (None without a centroid for the branch)
    - ``grad_cam`` ``(T', V')`` and ``grad_cam_frames`` ``(T, V)``
    - ``attention``: ``{branch: (M, L)}`` or None; ``joint_relations``: list of ``(V, V)`` or None
    """
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if xt.dim() != 4:
        raise ConfigError(f"{model.label}: expected one sample (C, T, V, M), got shape {tuple(xt.shape)}")
    xb = _as_batch(model, xt[None])
    with _eval_mode(model):
        feats = _features(model, xb)
        cam = _grad_cam_features(model, feats, xb.shape[2], class_index)
        cls = int(cam["class_index"][0])
        logits = cam["logits"][0]
        out: dict[str, Any] = {
            "logits": logits, "probabilities": _softmax(logits.astype(np.float64)),
            "prediction": int(logits.argmax()), "class_index": cls,
            "feature_shape": tuple(int(s) for s in feats.map.shape[2:]),
            "grad_cam": cam["cam"][0], "grad_cam_frames": cam["frames"][0],
            "spatial": None, "temporal": None,
        }
        if model.head is not None:
            for branch, d in _decompose_map(model, feats.map).items():
                out[branch] = _branch_summary(branch, d, None if centroids is None else centroids.get(branch), cls)
        att = _attention_map(model, feats.map)
        out["attention"] = None if att is None else {k: v[0] for k, v in att.items()}
    out["joint_relations"] = joint_relations(model, xb)
    return out


def _branch_summary(branch: str, d: dict[str, np.ndarray], centroids: np.ndarray | None, cls: int) -> dict[str, Any]:
    # norms in float64: float32 terms of a far-off input (~1e20) would overflow when squared
    terms, bias, emb = (np.asarray(d[k], dtype=np.float64) for k in ("terms", "bias", "embedding"))
    res: dict[str, Any] = {"axis": BRANCH_AXIS[branch], "term_norms": np.linalg.norm(terms[0], axis=1),
                           "embedding_norm": float(np.linalg.norm(emb[0])), "bias_norm": float(np.linalg.norm(bias)),
                           "contributions": None, "bias_contribution": None, "cosine": None}
    if centroids is not None:
        centroids = np.asarray(centroids)
        if centroids.ndim != 2 or centroids.shape[1] != terms.shape[2] or not 0 <= cls < len(centroids):
            raise ConfigError(f"{branch} centroids must be (K, {terms.shape[2]}) covering class {cls}, "
                              f"got shape {centroids.shape}")
        parts, b = similarity_contributions(terms, bias, centroids[cls])
        res.update(contributions=parts[0], bias_contribution=float(b[0]), cosine=float(parts[0].sum() + b[0]))
    return res
