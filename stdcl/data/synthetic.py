"""Synthetic teaching set: procedural, labelled skeleton sequences in the ``ntu25`` layout.

Thirteen classes made to show what *spatial* and *temporal* information are (see
``docs/stdcl-method.md``): six pairs of twins and one two-person class.

=====  ========================  =====  ========  ==================================================
label  class                     twin   type      what differs from the twin
=====  ========================  =====  ========  ==================================================
0      wave left hand            1      spatial   side of the body only (mirrored, same timing)
1      wave right hand           0      spatial
2      kick left leg             3      spatial
3      kick right leg            2      spatial
4      raise left arm            5      spatial
5      raise right arm           4      spatial
6      sit down                  7      temporal  same poses, reversed in time
7      stand up                  6      temporal
8      clap slowly               9      temporal  same poses, ~2.5x the tempo (2-3 vs 5-7 claps)
9      clap fast                 8      temporal
10     touch head then knees     11     temporal  same poses, in the opposite order
11     touch knees then head     10     temporal
12     shake hands (2 persons)   -      -         -
=====  ========================  =====  ========  ==================================================

A spatial twin is its partner rendered mirrored left <-> right; a temporal twin is its
partner rendered with the action time reversed or with more cycles in the same time. The
table is also in ``class_meta`` (one dict per class: ``name``, ``twin`` (class index or
None), ``twin_type`` (``"spatial"``/``"temporal"``/None), ``persons``, ``description``,
``contrast``).

How a sample is made: joint directions over time (angle keyframes, two-bone IK for hand
targets) -> positions by forward kinematics along the layout's bone tree with one length
per bone and subject (so bone lengths are constant over frames) -> feet planted on the
floor -> turned by a random yaw (+-45 deg; the interaction is seen side-on) and placed
2.6-3.6 m in front of a Kinect-like camera tilted down 0-10 deg, at a height that puts the
floor at y = -1.05..-0.6 m (camera space: x right, y up, z depth, metres; spine base near
y = 0) -> sensor noise (3-10 mm, more on hands and feet) -> dropped frames (35 % of the
samples: 2-10 % of their frames repeat the previous one or, for 30 % of those samples,
are zero) -> zero padding after the valid frames.
Variation: 40 subjects (height +-6 %, bone proportions +-4 %, speed, amplitude, stance,
posture); per sample: speed (40-100 frames at 30 fps), lead-in/out, time warp, amplitude,
viewpoint, camera, noise. Cross-subject split: subjects whose id ends in 3, 6 or 9 are
held out (12 of 40, 30 % of the samples), like NTU's X-Sub; the second person of an
interaction is drawn from the same side of the split. Names
``SYN_P<subject>_A<action>_R<repetition>`` (action = label + 1). The default 2860 samples
(220 per class) leave 154 training samples per class, enough for the released loss
settings (128 positives and 512 negatives per anchor). Generation is deterministic in the
seed and vectorised over samples and frames (5000 samples take ~3 s of CPU);
:class:`SyntheticSource` keeps the last generated set cached in memory (~90 MB by default)
so train and test sources share it.

The plain-numpy format (the project's own format, read by :mod:`stdcl.data.numpy_source`),
written by :func:`write_synthetic` as ``<out>/synthetic.npz`` (uncompressed, so ``x`` can be
memory-mapped) plus ``<out>/README.txt``:

- ``x``: float32 ``(N, C, T, V, M)`` = ``(N, 3, T, 25, 2)``, zero after each sample's length;
  the second person is zero for one-person classes (as in NTU60 prepared data);
- ``y``: int64 ``(N,)`` 0-based labels;
- ``names``: ``(N,)`` str; ``class_names``: ``(K,)`` str; ``layout``: str (``"ntu25"``);
- ``lengths``: int64 ``(N,)`` valid frames; ``subjects``: int64 ``(N,)`` subject ids;
- ``split_train``, ``split_test``: int64 index arrays into the N samples;
- ``class_meta``: str, a JSON list with one dict per class (keys above).
"""

from __future__ import annotations

import inspect
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stdcl.data.base import SampleSource
from stdcl.data.layouts import NTU25
from stdcl.data.synth.actions import CLASSES, class_meta, class_names
from stdcl.data.synth.generator import (DEFAULT_NUM_SAMPLES, DEFAULT_NUM_SUBJECTS, NUM_CLASSES, Compact, Plan,
                                        default_test_subjects, plan, synthesize, to_arrays)
from stdcl.errors import ConfigError
from stdcl.io import atomic_path, write_text_atomic

__all__ = ["CLASSES", "DEFAULT_NUM_SAMPLES", "NUM_CLASSES", "SyntheticSource", "class_meta", "class_names",
           "default_test_subjects", "generate", "render_class", "write_synthetic"]

FILENAME = "synthetic.npz"


def generate(num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0, *, labels: Sequence[int] | None = None,
             num_subjects: int = DEFAULT_NUM_SUBJECTS, test_subjects: Sequence[int] | None = None,
             min_frames: int = 40, max_frames: int = 100, max_yaw: float = 45.0, max_camera_pitch: float = 10.0,
             noise: float = 1.0, drop_prob: float = 0.35, timing_jitter: bool = True) -> dict[str, Any]:
    """Generate the set as the plain-numpy dictionary (keys in the module docstring).

    Args:
        num_samples: total samples; labels cycle through the classes (balanced).
        seed: everything is deterministic in it.
        labels: explicit label per sample instead of the balanced cycle. Per-sample draws
            never depend on the labels, so two calls that differ only in ``labels`` render
            the same subjects, timing, viewpoints and noise (twin comparisons).
        num_subjects, test_subjects: subject pool and the held-out ids (default: ids
            ending in 3, 6 or 9).
        min_frames, max_frames: clip length range (T of ``x`` is the longest clip).
        max_yaw: viewpoint rotation about the vertical axis, uniform in +-max_yaw degrees.
        max_camera_pitch: camera tilt, uniform in 0..max degrees (0: y is exactly vertical).
        noise: scale of the sensor noise (0 turns it off).
        drop_prob: fraction of samples with dropped frames (0 turns them off).
        timing_jitter: random lead-in/out and time warp (off: symmetric timing, so a
            reversed twin is exactly the time-reversed sequence).
    """
    return to_arrays(_synthesize(num_samples=num_samples, seed=seed, labels=labels, num_subjects=num_subjects,
                                 test_subjects=test_subjects, min_frames=min_frames, max_frames=max_frames,
                                 max_yaw=max_yaw, max_camera_pitch=max_camera_pitch, noise=noise,
                                 drop_prob=drop_prob, timing_jitter=timing_jitter))


_OPTIONS = set(inspect.signature(synthesize).parameters)
_PLAN_OPTIONS = set(inspect.signature(plan).parameters)  # all but the rendering-only noise and drop_prob


def _key(kwargs: dict[str, Any]) -> tuple:
    """The generation options checked by name (labels=None) as a hashable cache key."""
    unknown = sorted(set(kwargs) - _OPTIONS)
    if unknown:
        raise ConfigError(f"synthetic: unknown option(s) {', '.join(unknown)}; "
                          f"choose from {', '.join(sorted(_OPTIONS - {'labels'}))}")
    subjects = kwargs.get("test_subjects")
    if subjects is not None and not isinstance(subjects, (list, tuple)):
        raise ConfigError(f"synthetic: test_subjects must be a list of subject numbers, got {subjects!r}")
    return tuple(sorted({**kwargs, "test_subjects": None if subjects is None else tuple(subjects)}.items()))


def _synthesize(**kwargs: Any) -> Compact:
    if kwargs.get("labels") is not None:
        _key({**kwargs, "labels": None})
        return synthesize(**kwargs)
    return _cached(_key(kwargs))


@lru_cache(maxsize=1)
def _cached(key: tuple) -> Compact:
    comp = synthesize(**dict(key))
    for a in (comp.x1, comp.x2, comp.second, comp.labels, comp.lengths, comp.subjects):
        a.flags.writeable = False
    return comp


@lru_cache(maxsize=4)
def _planned(key: tuple) -> Plan:
    return plan(**{k: v for k, v in key if k in _PLAN_OPTIONS})


def render_class(label: int, num: int = 1, seed: int = 0, **options: Any) -> dict[str, Any]:
    """``num`` samples of one class (same draws for every class at equal ``seed``/``num``),
    e.g. ``render_class(0, 8, noise=0)`` and ``render_class(1, 8, noise=0)`` are the same
    eight people waving with the left and with the right hand. Options as :func:`generate`."""
    if not 0 <= int(label) < NUM_CLASSES:
        raise ConfigError(f"synthetic: label must be in 0..{NUM_CLASSES - 1}, got {label}")
    return generate(num, seed, labels=np.full(num, int(label)), **options)


class SyntheticSource(SampleSource):
    """The synthetic set as a source: names, labels, subjects and lengths known at once (its
    :func:`~stdcl.data.synth.generator.plan`), the motion generated at the first :meth:`read` (cached per
    settings) and kept in memory; so a set is sized without being rendered.

    ``read(i)`` returns float32 ``(3, T, 25, 2)`` padded with zeros after the sample's
    ``lengths[i]`` frames (second person zero except for ``shake hands``).

    Args:
        split: ``"train"``, ``"test"`` (cross-subject) or ``"all"``.
        num_samples: total samples before the split (default 2860).
        seed: generation seed.
        **options: passed to :func:`generate` (``noise``, ``max_yaw``, ...).
    """

    format = "synthetic"

    def __init__(self, split: str = "train", num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0,
                 **options: Any):
        if split not in ("train", "test", "all"):
            raise ConfigError(f"synthetic: unknown split {split!r}; choose train, test or all")
        if "labels" in options:
            raise ConfigError("synthetic: labels= is not a source option (use render_class)")
        self.path = None
        self.split = split
        self._key = _key({"num_samples": num_samples, "seed": seed, "labels": None, **options})
        meta = _planned(self._key)  # every option checked there (noise and drop_prob when rendered)
        self._data: Compact | None = None
        self.seed = int(seed)
        test = np.isin(meta.subjects, meta.test_subjects)
        keep = {"train": ~test, "test": test, "all": np.ones_like(test)}[split]
        self._idx = np.flatnonzero(keep)
        self.names = [meta.names[i] for i in self._idx]
        self.labels = meta.labels[self._idx].astype(np.int64)
        self.lengths = meta.frames[self._idx].astype(np.int64)
        self.subjects = meta.subjects[self._idx].astype(np.int64)
        self.class_names = class_names()
        self.class_meta = class_meta()
        self.layout = NTU25

    def read(self, i: int) -> np.ndarray:
        if self._data is None:  # rendered once per settings (shared with every split of them, and forked workers)
            self._data = _cached(self._key)
        return self._data.sample(int(self._idx[i]))

    def joints_persons(self) -> tuple[int, int]:
        return NTU25.num_joints, 2

    def describe(self) -> str:
        return f"synthetic seed={self.seed} [{self.split}]"


def write_synthetic(out_dir: str | os.PathLike, num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0,
                    **options: Any) -> Path:
    """Write ``<out_dir>/synthetic.npz`` (plain-numpy format) and ``README.txt`` atomically;
    returns the ``.npz`` path. Options as :func:`generate`."""
    out = Path(out_dir)
    arrays = generate(num_samples, seed, **options)
    path = out / FILENAME
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    write_text_atomic(out / "README.txt", _readme(arrays, num_samples, seed, options))
    return path


def _readme(arrays: dict[str, Any], num_samples: int, seed: int, options: dict[str, Any]) -> str:
    y, tr, te = arrays["y"], arrays["split_train"], arrays["split_test"]
    meta = json.loads(str(arrays["class_meta"]))
    lines = ["Synthetic skeleton action set (stdcl teaching data, ntu25 layout)",
             "",
             f"generated by stdcl.data.synthetic.write_synthetic(num_samples={num_samples}, seed={seed}"
             + "".join(f", {k}={v!r}" for k, v in options.items()) + ")",
             f"{len(y)} samples, x {tuple(arrays['x'].shape)} float32 (N, C, T, V, M), camera space in metres "
             "(x right, y up, z depth), 30 fps; zero after each sample's length.",
             f"cross-subject split: {len(tr)} train / {len(te)} test; held-out subjects "
             f"{sorted(set(arrays['subjects'][te].tolist()))}",
             "",
             "label  train  test  persons  twin  type      class: description"]
    for k, m in enumerate(meta):
        twin = "-" if m["twin"] is None else str(m["twin"])
        lines.append(f"{k:5d}  {int((y[tr] == k).sum()):5d}  {int((y[te] == k).sum()):4d}  {m['persons']:7d}  "
                     f"{twin:>4}  {m['twin_type'] or '-':8}  {m['name']}: {m['description']}"
                     + (f" [twin contrast: {m['contrast']}]" if m["contrast"] else ""))
    lines += ["",
              "Spatial twins differ only in the side of the body that moves (mirror images, same timing);",
              "temporal twins only in the order, direction or tempo of the same poses.",
              "Arrays: x, y, names, class_names, layout, lengths, subjects, split_train, split_test,",
              "class_meta (JSON). Read with stdcl.data.numpy_source.NumpySource (split 'train', 'test' or 'all'),",
              "or open_source('synthetic', path=<this folder>, split=...).",
              ""]
    return "\n".join(lines)
