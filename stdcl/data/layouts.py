"""Skeleton layouts: joint names, bone tree, centre joint, bone pairs and body-part groups.

A :class:`Layout` is everything the rest of the project needs to know about a skeleton:
the graph encoders build their adjacency from ``edges``, the bone modality uses
``bone_pairs``, Hyperformer reads ``groups``, preprocessing centres on ``origin`` and the
synthetic generator does forward kinematics along ``parents``.

Shipped layouts: ``ntu25`` (Kinect v2, NTU RGB+D), ``ucla20`` (Kinect v1, NW-UCLA), ``coco17``
and ``natops8`` (UEA NATOPS: the two arms' 8 tracked points).
Custom layouts come from a YAML file or a mapping (:func:`layout_from_mapping`), e.g.::

    name: coco17
    joints: [nose, l_eye, r_eye, ...]
    edges: [[l_eye, nose], [r_eye, nose], ...]   # (child, parent), names or 0-based ids
    center: nose                                # root of the bone tree
    origin: nose                                # joint subtracted when centring (default: center)
    groups: {head: [nose, l_eye, r_eye], arms: [...], legs: [...]}   # optional
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from stdcl.errors import ConfigError, first_line


@dataclass(frozen=True)
class Layout:
    """An immutable skeleton description (all joint ids 0-based)."""

    name: str
    joints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]  # (child, parent)
    center: int  # root of the bone tree; its bone is the zero vector
    origin: int  # joint subtracted when centring a sequence
    groups: tuple[int, ...]  # body-part group id per joint (Hyperformer hyperedges)
    bone_pairs: tuple[tuple[int, int], ...] = field(default=())
    num_person: int = 2

    def __post_init__(self) -> None:
        v = len(self.joints)
        if v < 2:
            raise ConfigError(f"layout {self.name!r}: needs at least 2 joints, got {v}")
        dup = next((j for i, j in enumerate(self.joints) if j in self.joints[:i]), None)
        if dup is not None:
            raise ConfigError(f"layout {self.name!r}: joint name {dup!r} appears twice")
        for name, j in (("center", self.center), ("origin", self.origin)):
            if not 0 <= j < v:
                raise ConfigError(f"layout {self.name!r}: {name} joint {j} is not in 0..{v - 1}")
        for c, p in self.edges:
            if not (0 <= c < v and 0 <= p < v) or c == p:
                raise ConfigError(f"layout {self.name!r}: bad edge ({c}, {p}) for {v} joints")
        if len(self.groups) != v:
            raise ConfigError(f"layout {self.name!r}: {len(self.groups)} group ids for {v} joints")
        if any(g < 0 for g in self.groups):
            raise ConfigError(f"layout {self.name!r}: group ids must be 0 or more, got {min(self.groups)}")
        if not 1 <= self.num_person <= 16:
            raise ConfigError(f"layout {self.name!r}: num_person {self.num_person} is outside 1..16")
        self._check_tree()
        for a, b in self.bone_pairs:
            if not (0 <= a < v and 0 <= b < v):
                raise ConfigError(f"layout {self.name!r}: bad bone pair ({a}, {b}) for {v} joints")
        if not self.bone_pairs:
            object.__setattr__(self, "bone_pairs", tuple(self.edges) + ((self.center, self.center),))

    def _check_tree(self) -> None:
        """The edges must form one tree rooted at ``center``: every other joint has exactly one parent
        and reaches the centre by following parents (no cycle, nothing disconnected)."""
        par = self.parents
        for j in range(self.num_joints):
            seen, k = [], j
            while k != self.center:
                if k in seen:
                    cycle = " -> ".join(self.joints[i] for i in [*seen[seen.index(k):], k])
                    raise ConfigError(f"layout {self.name!r}: the bone tree has a cycle ({cycle})")
                seen.append(k)
                k = int(par[k])

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def num_groups(self) -> int:
        return int(max(self.groups)) + 1

    @property
    def inward(self) -> list[tuple[int, int]]:
        """(child, parent) edges, as the reference graphs call them."""
        return list(self.edges)

    @property
    def outward(self) -> list[tuple[int, int]]:
        return [(p, c) for c, p in self.edges]

    @property
    def parents(self) -> np.ndarray:
        """Parent id per joint (-1 for the centre); raises if a joint has two parents or none."""
        par = np.full(self.num_joints, -1, dtype=np.int64)
        for c, p in self.edges:
            if par[c] != -1:
                raise ConfigError(f"layout {self.name!r}: joint {self.joints[c]!r} has two parents")
            par[c] = p
        if par[self.center] != -1:
            raise ConfigError(f"layout {self.name!r}: the centre {self.joints[self.center]!r} is the root of the "
                              "bone tree and cannot have a parent")
        roots = [j for j in range(self.num_joints) if par[j] == -1 and j != self.center]
        if roots:
            raise ConfigError(f"layout {self.name!r}: the bone tree is not connected: "
                              f"{', '.join(repr(self.joints[j]) for j in roots)} has no parent (only the centre "
                              f"{self.joints[self.center]!r} may have none)")
        return par

    def index(self, joint: str | int) -> int:
        """Joint id from a name or an id."""
        if isinstance(joint, (int, np.integer)):
            if not 0 <= int(joint) < self.num_joints:
                raise ConfigError(f"layout {self.name!r}: joint id {joint} out of range")
            return int(joint)
        try:
            return self.joints.index(joint)
        except ValueError:
            raise ConfigError(f"layout {self.name!r}: unknown joint {joint!r}") from None

    def to_mapping(self) -> dict[str, Any]:
        """A plain mapping that :func:`layout_from_mapping` turns back into this layout."""
        return {"name": self.name, "joints": list(self.joints), "edges": [list(e) for e in self.edges],
                "center": self.center, "origin": self.origin, "groups": list(self.groups),
                "bone_pairs": [list(b) for b in self.bone_pairs], "num_person": self.num_person}


def _one_based(pairs: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple((a - 1, b - 1) for a, b in pairs)


NTU25 = Layout(
    name="ntu25",
    joints=("spine_base", "spine_mid", "neck", "head", "l_shoulder", "l_elbow", "l_wrist", "l_hand",
            "r_shoulder", "r_elbow", "r_wrist", "r_hand", "l_hip", "l_knee", "l_ankle", "l_foot",
            "r_hip", "r_knee", "r_ankle", "r_foot", "spine_shoulder", "l_hand_tip", "l_thumb",
            "r_hand_tip", "r_thumb"),
    edges=_one_based([(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21),
                      (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1),
                      (18, 17), (19, 18), (20, 19), (22, 23), (23, 8), (24, 25), (25, 12)]),
    center=20,
    origin=1,
    groups=(0, 4, 2, 2, 2, 2, 1, 1, 2, 2, 1, 1, 2, 3, 3, 3, 2, 3, 3, 3, 1, 0, 1, 0, 1),
    num_person=2,
)

UCLA20 = Layout(
    name="ucla20",
    joints=("hip_center", "spine", "shoulder_center", "head", "l_shoulder", "l_elbow", "l_wrist",
            "l_hand", "r_shoulder", "r_elbow", "r_wrist", "r_hand", "l_hip", "l_knee", "l_ankle",
            "l_foot", "r_hip", "r_knee", "r_ankle", "r_foot"),
    edges=_one_based([(1, 2), (2, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9),
                      (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17),
                      (19, 18), (20, 19)]),
    center=2,
    origin=1,
    groups=(0,) * 4 + (1,) * 8 + (2,) * 8,
    num_person=1,
)

_REGISTRY: dict[str, Layout] = {NTU25.name: NTU25, UCLA20.name: UCLA20}


def available_layouts() -> list[str]:
    """Names of the registered layouts."""
    return sorted(_REGISTRY)


def register_layout(layout: Layout) -> Layout:
    """Make ``layout`` available to :func:`get_layout` by its name."""
    _REGISTRY[layout.name] = layout
    return layout


LAYOUT_KEYS = frozenset({"name", "joints", "edges", "center", "origin", "groups", "bone_pairs", "num_person"})


def layout_from_mapping(spec: Mapping[str, Any]) -> Layout:
    """Build a layout from a mapping (see the module docstring for the keys); every field is checked."""
    name = spec.get("name", "custom")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"layout: 'name' must be a non-empty string, got {name!r}")
    unknown = sorted(map(str, set(spec) - LAYOUT_KEYS))
    if unknown:  # a typo (bones: for edges:) would otherwise silently drop the skeleton's edges
        raise ConfigError(f"layout {name!r}: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(LAYOUT_KEYS))}")
    joints = spec.get("joints")
    if not joints or not isinstance(joints, (list, tuple)) or not all(isinstance(j, str) and j for j in joints):
        raise ConfigError(f"layout {name!r}: 'joints' must be a non-empty list of names")
    joints = tuple(joints)
    dup = next((j for i, j in enumerate(joints) if j in joints[:i]), None)
    if dup is not None:
        raise ConfigError(f"layout {name!r}: joint name {dup!r} appears twice")

    def jid(j: Any) -> int:
        if isinstance(j, str):
            if j not in joints:
                raise ConfigError(f"layout {name!r}: unknown joint {j!r}")
            return joints.index(j)
        if isinstance(j, (int, np.integer)) and not isinstance(j, bool) and 0 <= int(j) < len(joints):
            return int(j)
        raise ConfigError(f"layout {name!r}: {j!r} is not a joint name or a 0-based id")

    def pairs(key: str) -> tuple[tuple[int, int], ...]:
        items = spec.get(key) or []
        if not isinstance(items, (list, tuple)) or not all(isinstance(e, (list, tuple)) and len(e) == 2
                                                           for e in items):
            raise ConfigError(f"layout {name!r}: {key!r} must be a list of [child, parent] pairs")
        return tuple((jid(c), jid(p)) for c, p in items)

    edges = pairs("edges")
    if "center" not in spec:
        raise ConfigError(f"layout {name!r}: 'center' (the root joint) is required")
    center = jid(spec["center"])
    origin = jid(spec.get("origin", spec["center"]))
    groups = _groups(spec.get("groups"), joints, jid, name)
    num_person = spec.get("num_person", 1)
    if isinstance(num_person, bool) or not isinstance(num_person, int):
        raise ConfigError(f"layout {name!r}: 'num_person' must be an integer, got {num_person!r}")
    return Layout(name=name, joints=joints, edges=edges, center=center, origin=origin, groups=groups,
                  bone_pairs=pairs("bone_pairs"), num_person=num_person)


def _groups(spec: Any, joints: tuple[str, ...], jid: Any, name: str) -> tuple[int, ...]:
    """Group id per joint from ``{group: [joints]}`` (each joint in exactly one) or a list of ids."""
    if spec is None:
        return (0,) * len(joints)
    if isinstance(spec, Mapping):
        g = [-1] * len(joints)
        for k, (group, members) in enumerate(spec.items()):
            if not isinstance(members, (list, tuple)):
                raise ConfigError(f"layout {name!r}: group {group!r} must list its joints")
            for m in members:
                j = jid(m)
                if g[j] != -1:
                    raise ConfigError(f"layout {name!r}: joint {joints[j]!r} is in two groups")
                g[j] = k
        if -1 in g:
            raise ConfigError(f"layout {name!r}: joint {joints[g.index(-1)]!r} is in no group")
        return tuple(g)
    if (isinstance(spec, (list, tuple)) and len(spec) == len(joints)
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in spec)):
        return tuple(spec)
    raise ConfigError(f"layout {name!r}: 'groups' must map group names to joints or give one id (0 or more) "
                      f"per joint ({len(joints)})")


def load_layout_file(path: str | os.PathLike) -> Layout:
    """Read a custom layout from a YAML (or JSON) file."""
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read layout file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({first_line(e)})") from None
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{path}: a layout file must hold a mapping")
    try:
        return layout_from_mapping(spec)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def get_layout(layout: str | os.PathLike | Mapping[str, Any] | Layout) -> Layout:
    """Resolve a layout given as a registered name, a YAML path, a mapping or a Layout."""
    if isinstance(layout, Layout):
        return layout
    if isinstance(layout, Mapping):
        return layout_from_mapping(layout)
    key = os.fspath(layout)
    if key in _REGISTRY:
        return _REGISTRY[key]
    if key.endswith((".yaml", ".yml", ".json")) or os.path.sep in key:
        return load_layout_file(key)
    raise ConfigError(f"unknown layout {key!r}; available: {', '.join(available_layouts())} "
                      "or a path to a layout YAML file")

COCO17 = register_layout(Layout(
    name="coco17",
    joints=("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
            "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle"),
    edges=((15, 13), (13, 11), (16, 14), (14, 12), (11, 5), (12, 6), (9, 7), (7, 5), (10, 8), (8, 6),
           (5, 0), (6, 0), (1, 0), (3, 1), (2, 0), (4, 2)),
    center=0,
    origin=0,
    groups=(0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2),
    num_person=2,
))

# UEA NATOPS: the 8 tracked points in the .ts file's order (dimensions 1-3 are hand_tip_l's x, y, z,
# ...), no torso, head or legs. The points are two unconnected arms, so for the graph encoders each
# arm is a tree rooted at its elbow (wrist -> elbow, hand tip -> wrist, thumb -> wrist) and the two
# elbows are joined by one edge standing for the unrecorded shoulders and torso: the graph is
# connected (7 edges, a tree) and the bone tree is rooted at the left elbow, whose bone is zero; the
# right elbow's bone is the elbow-to-elbow vector. Hyperformer groups: 0 left arm, 1 right arm.
# Same as experiments/layouts/natops8.yaml (what `stdcl data convert-ts` stores in its .npz).
NATOPS8 = register_layout(Layout(
    name="natops8",
    joints=("hand_tip_l", "hand_tip_r", "elbow_l", "elbow_r", "wrist_l", "wrist_r", "thumb_l", "thumb_r"),
    edges=((3, 2), (4, 2), (5, 3), (0, 4), (1, 5), (6, 4), (7, 5)),
    center=2,
    origin=2,
    groups=(0, 1, 0, 1, 0, 1, 0, 1),
    num_person=1,
))
