"""The STD-CL decoupling head (STFD): spatial- and temporal-specific embeddings of a feature map.

Per person, from the encoder's last map ``X`` of shape ``(C', T', V')``:

- spatial ``s``: mean over ``T'`` -> ``(C', V')``; ``phi``: 1x1 map ``C' -> C'/r`` shared by all
  joints (with bias); flatten channel-major (index ``c * V' + v``) -> ``sigma``: linear
  ``V' * C'/r -> D``.
- temporal ``t``: mean over ``V'`` -> ``(C', T')``; ``theta``: 1x1 map ``C' -> C'/r``; flatten
  channel-major (``c * T' + t``) -> ``zeta``: linear ``T' * C'/r -> D``.

No normalisation and no activation: each branch is two stacked linear maps, so
``s = sum_j W_j phi(x_j) + b`` exactly (``W_j`` the columns of ``sigma`` that read joint ``j``);
:meth:`DecouplingHead.contributions` returns those per-joint (per-frame) terms. The ``M``
per-person embeddings are averaged.

``C'/r`` is rounded down (``C' // r``), as the released code's ``in_channels // rel_reduction``;
every registered encoder has ``C'`` divisible by 8.

Initialisation (``init="kaiming"``, the default): Kaiming-normal (fan_out) weights and zero
biases for all four maps. ``init="released"`` reproduces the released code exactly: there the
init loop only touches ``nn.Conv2d`` and ``nn.Linear``, so the two ``nn.Conv1d`` reductions
(``phi``, ``theta``) keep PyTorch's default init (Kaiming-uniform with ``a = sqrt(5)``, uniform
bias) and only ``sigma``/``zeta`` get Kaiming-normal fan_out with zero bias.

``pooling="attention"`` (a project option, not in the released code): a scoring layer (linear
``C' -> 1``, zero-initialised) turns the time-pooled features of each joint into softmax weights
``a`` over the ``V'`` joints, and the joint-pooled features of each frame into softmax weights
over the ``T'`` frames; the per-joint (per-frame) terms are scaled by ``V' * a_j`` (``T' * a_t``).
At initialisation the weights are uniform, so the head equals the mean-pooled one, and the
exact decomposition ``s = sum_j V' a_j W_j phi(x_j) + b`` still holds.
"""

from __future__ import annotations

import torch
from torch import nn

from stdcl.errors import ConfigError

BRANCHES = ("spatial", "temporal")
POOLINGS = ("mean", "attention")
INITS = ("kaiming", "released")


class _Branch(nn.Module):
    """One branch: pool over the other axis, 1x1 reduction, flatten channel-major, linear to D."""

    def __init__(self, channels: int, reduced: int, length: int, dim: int, attention: bool, init: str):
        super().__init__()
        self.length = length
        self.reduce = nn.Conv1d(channels, reduced, kernel_size=1)
        self.project = nn.Linear(reduced * length, dim)
        self.score = nn.Linear(channels, 1) if attention else None
        if init == "kaiming":
            nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out")
            nn.init.zeros_(self.reduce.bias)
        nn.init.kaiming_normal_(self.project.weight, mode="fan_out")
        nn.init.zeros_(self.project.bias)
        if self.score is not None:
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)

    def weights(self, pooled: torch.Tensor) -> torch.Tensor | None:
        """Softmax weights ``(B, L)`` over the kept axis of ``pooled (B, C', L)`` (None: mean pooling)."""
        if self.score is None:
            return None
        return torch.softmax(self.score(pooled.transpose(1, 2)).squeeze(-1), dim=-1)

    def _reduced(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, C'/r, L)``: the reduction, scaled by ``L * a`` under attention pooling."""
        u = self.reduce(pooled)
        a = self.weights(pooled)
        if a is not None:
            u = u * (self.length * a).unsqueeze(1)
        return u

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        u = self._reduced(pooled)
        return self.project(u.flatten(1))  # channel-major flatten: index c * L + l

    def terms(self, pooled: torch.Tensor) -> torch.Tensor:
        """Per-position terms ``(B, L, D)`` whose sum over ``L`` plus the bias is :meth:`forward`."""
        u = self._reduced(pooled)
        w = self.project.weight.view(self.project.out_features, -1, self.length)  # (D, C'/r, L)
        return torch.einsum("bcl,dcl->bld", u, w)


class DecouplingHead(nn.Module):
    """Training-only head mapping ``(N, M, C', T', V')`` to ``{"spatial": (N, D), "temporal": (N, D)}``.

    Args:
        feature_shape: ``(C', T', V')`` of the encoder's map for the configured window.
        reduction: ``r`` of the 1x1 reductions (``C' // r`` channels).
        dim: embedding size ``D``.
        pooling: ``"mean"`` (released) or ``"attention"`` (see the module docstring).
        branches: the enabled subset of ``("spatial", "temporal")``.
        init: ``"kaiming"`` (all four maps) or ``"released"`` (see the module docstring).
    """

    def __init__(self, feature_shape: tuple[int, int, int], reduction: int = 8, dim: int = 256,
                 pooling: str = "mean", branches: tuple[str, ...] = BRANCHES, init: str = "kaiming"):
        super().__init__()
        c, t, v = (int(s) for s in feature_shape)
        branches = tuple(branches)
        if pooling not in POOLINGS:
            raise ConfigError(f"head: unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}")
        if init not in INITS:
            raise ConfigError(f"head: unknown init {init!r}; choose from {', '.join(INITS)}")
        bad = [b for b in branches if b not in BRANCHES]
        if bad or not branches or len(set(branches)) != len(branches):
            raise ConfigError(f"head: branches must be a non-empty subset of {', '.join(BRANCHES)}, "
                              f"got {list(branches)}")
        if min(c, t, v) < 1 or reduction < 1 or dim < 1:
            raise ConfigError(f"head: bad sizes feature_shape={tuple(feature_shape)} reduction={reduction} dim={dim}")
        if c // reduction < 1:
            raise ConfigError(f"head: C'={c} channels cannot be reduced by r={reduction} (C' // r = 0)")
        self.feature_shape = (c, t, v)
        self.reduction = int(reduction)
        self.reduced = c // self.reduction
        self.dim = int(dim)
        self.pooling = pooling
        self.branches = tuple(b for b in BRANCHES if b in branches)
        att = pooling == "attention"
        # Built in the released order (spatial first); names read as the method's symbols.
        self.spatial = _Branch(c, self.reduced, v, self.dim, att, init) if "spatial" in self.branches else None
        self.temporal = _Branch(c, self.reduced, t, self.dim, att, init) if "temporal" in self.branches else None

    # -- helpers --------------------------------------------------------------------------
    def _pooled(self, fmap: torch.Tensor) -> tuple[dict[str, torch.Tensor], int, int]:
        if fmap.dim() != 5 or tuple(fmap.shape[2:]) != self.feature_shape:
            raise ConfigError(f"head: expected a feature map (N, M, {', '.join(map(str, self.feature_shape))}), "
                              f"got shape {tuple(fmap.shape)}")
        n, m = fmap.shape[:2]
        x = fmap.flatten(0, 1)  # (N*M, C', T', V')
        out = {}
        if self.spatial is not None:
            out["spatial"] = x.mean(2)  # over T' -> (N*M, C', V')
        if self.temporal is not None:
            out["temporal"] = x.mean(3)  # over V' -> (N*M, C', T')
        return out, n, m

    def _branch(self, name: str) -> _Branch:
        return getattr(self, name)

    # -- API ------------------------------------------------------------------------------
    def forward(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(N, M, C', T', V')`` -> ``{branch: (N, D)}``, unnormalised, averaged over persons."""
        pooled, n, m = self._pooled(fmap)
        return {k: self._branch(k)(p).view(n, m, -1).mean(1) for k, p in pooled.items()}

    def attention_weights(self, fmap: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Per-person softmax weights: ``spatial`` ``(N, M, V')``, ``temporal`` ``(N, M, T')``; None if mean pooling."""
        if self.pooling != "attention":
            return None
        pooled, n, m = self._pooled(fmap)
        return {k: self._branch(k).weights(p).view(n, m, -1) for k, p in pooled.items()}

    def contributions(self, fmap: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Exact decomposition per branch: ``(terms, bias)`` with ``terms.sum(1) + bias == forward(fmap)[branch]``.

        ``terms`` is ``(N, V', D)`` (one term per joint) for ``spatial`` and ``(N, T', D)`` (per
        frame) for ``temporal``, averaged over persons; ``bias`` is the last linear map's bias ``(D,)``.
        """
        pooled, n, m = self._pooled(fmap)
        out = {}
        for k, p in pooled.items():
            br = self._branch(k)
            terms = br.terms(p)
            out[k] = (terms.view(n, m, *terms.shape[1:]).mean(1), br.project.bias)
        return out

    def extra_repr(self) -> str:
        c, t, v = self.feature_shape
        return (f"feature_shape=(C'={c}, T'={t}, V'={v}), reduction={self.reduction} (C'//r={self.reduced}), "
                f"dim={self.dim}, pooling={self.pooling}, branches={self.branches}")

