"""Input modalities computed as the reference feeders do (CTR-GCN ``feeder_ntu``/``feeder_ucla``).

- ``bone``: ``x[:, :, child] - x[:, :, parent]`` over the layout's bone pairs (the centre's
  pair is (centre, centre): a zero bone);
- ``*_motion``: next-frame difference ``x[:, t+1] - x[:, t]``, last frame zero, applied after
  the bone step (so ``bone_motion`` is the motion of bones).
"""

from __future__ import annotations

import numpy as np

from stdcl.data.layouts import Layout

MODALITIES = ("joint", "bone", "joint_motion", "bone_motion")


def bones(x: np.ndarray, layout: Layout) -> np.ndarray:
    """Bone vectors of a (C, T, V, M) sequence; joints outside every pair stay zero."""
    out = np.zeros_like(x)
    for child, parent in layout.bone_pairs:
        out[:, :, child] = x[:, :, child] - x[:, :, parent]
    return out


def motion(x: np.ndarray) -> np.ndarray:
    """Next-frame difference along T (axis 1) with the last frame set to zero."""
    out = np.empty_like(x)
    out[:, :-1] = x[:, 1:] - x[:, :-1]
    out[:, -1] = 0
    return out


def apply_modality(x: np.ndarray, modality: str, layout: Layout) -> np.ndarray:
    """Turn a joint sequence (C, T, V, M) into ``modality``."""
    if modality == "joint":
        return x
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")
    if modality.startswith("bone"):
        x = bones(x, layout)
    if modality.endswith("motion"):
        x = motion(x)
    return x
