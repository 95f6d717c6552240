"""The schema of checkpoint metadata (``model.json`` beside ``model.safetensors``).

:func:`validate_meta` checks every field a reader uses before anything is built from it:
types, ranges (bounded, so a hostile file cannot make the loader allocate terabytes) and
cross-field consistency (``class_names`` and ``num_classes`` agree with the encoder).
Fields it does not know are kept untouched: callers may record anything else.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

from stdcl.data.layouts import Layout, get_layout
from stdcl.data.modalities import MODALITIES
from stdcl.encoders.registry import available
from stdcl.errors import ConfigError, DataError

FORMAT = "stdcl-encoder"

#: (low, high) of the encoder's integer constructor arguments.
ENCODER_INTS = {"num_classes": (1, 100_000), "in_channels": (1, 64), "num_person": (1, 16), "window": (1, 1024)}
#: (low, high) of the STD-CL head's integer sizes (its projection is (C' / r * L) x dim).
HEAD_INTS = {"dim": (1, 65_536), "reduction": (1, 4096)}
OPTIONAL_STR = ("version", "dataset", "protocol", "modality", "layout", "kind", "run", "exported_from",
                "imported_from", "save_id")
OPTIONAL_MAPPING = ("head", "metrics", "best", "config")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _int(value: Any, key: str, low: int, high: int, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(f"'{key}' must be an integer, got {_type_name(value)}")
    if not low <= value <= high:
        fail(f"'{key}' = {value} is outside {low}..{high}")
    return value


def _json_value(value: Any, key: str, fail, depth: int = 0) -> None:
    """Options hold JSON scalars, lists and mappings only (finite numbers, string keys)."""
    if depth > 16:
        fail(f"'{key}' is nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        fail(f"'{key}' is not a finite number")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _json_value(v, f"{key}[{i}]", fail, depth + 1)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                fail(f"'{key}' has a non-string key {k!r}")
            _json_value(v, f"{key}.{k}", fail, depth + 1)
    elif value is not None and not isinstance(value, (bool, int, float, str)):
        fail(f"'{key}' holds a {_type_name(value)}")


def validate_meta(info: Any, path: str | os.PathLike) -> dict[str, Any]:
    """``info`` (parsed JSON of ``path``) checked against the schema; a one-line :class:`DataError`
    naming ``path`` and the field otherwise. Returns ``info`` with ``encoder.options`` defaulted to ``{}``
    and ``encoder.layout`` resolved to a :class:`Layout`-compatible mapping or name (checked)."""

    def fail(problem: str) -> None:
        raise DataError(path, problem)

    if not isinstance(info, dict):
        fail(f"not stdcl checkpoint metadata (a JSON object is expected, got {_type_name(info)})")
    if info.get("format", FORMAT) != FORMAT:
        fail(f"'format' is {info.get('format')!r}, expected {FORMAT!r}")
    enc = info.get("encoder")
    if not isinstance(enc, dict):
        fail("not stdcl checkpoint metadata (no 'encoder' object)" if enc is None
             else f"'encoder' must be an object, got {_type_name(enc)}")
    name = enc.get("name")
    if not isinstance(name, str):
        fail(f"'encoder.name' must be a string, got {_type_name(name)}")
    if name not in available():
        fail(f"'encoder.name' {name!r} is not a known encoder (available: {', '.join(available())})")
    for key, (low, high) in ENCODER_INTS.items():
        if key not in enc:
            fail(f"'encoder.{key}' is missing")
        _int(enc[key], f"encoder.{key}", low, high, fail)
    options = enc.setdefault("options", {})
    if not isinstance(options, dict):
        fail(f"'encoder.options' must be an object, got {_type_name(options)}")
    _json_value(options, "encoder.options", fail)
    clash = sorted(set(options) & (set(ENCODER_INTS) | {"name", "layout"}))
    if clash:
        fail(f"'encoder.options' repeats the constructor argument {clash[0]!r}")
    layout = enc.get("layout")
    if not isinstance(layout, (str, dict)):
        fail(f"'encoder.layout' must be a layout name or object, got {_type_name(layout)}")
    if isinstance(layout, str) and (os.sep in layout or layout.endswith((".yaml", ".yml", ".json"))):
        fail(f"'encoder.layout' {layout!r} is a path; a checkpoint stores its layout inline")
    resolved = _layout(layout, fail)
    num_classes = enc["num_classes"]

    for key in OPTIONAL_STR:
        if info.get(key) is not None and not isinstance(info[key], str):
            fail(f"'{key}' must be a string, got {_type_name(info[key])}")
    for key in OPTIONAL_MAPPING:
        if info.get(key) is not None and not isinstance(info[key], dict):
            fail(f"'{key}' must be an object, got {_type_name(info[key])}")
    if info.get("modality") is not None and info["modality"] not in MODALITIES:
        fail(f"'modality' {info['modality']!r} is not one of {', '.join(MODALITIES)}")
    if info.get("layout") is not None and info["layout"] != resolved.name:
        fail(f"'layout' {info['layout']!r} disagrees with the encoder's layout {resolved.name!r}")
    if "num_classes" in info and info["num_classes"] != num_classes:
        fail(f"'num_classes' {info['num_classes']!r} disagrees with 'encoder.num_classes' {num_classes}")
    names = info.get("class_names")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            fail("'class_names' must be a list of strings")
        if len(names) != num_classes:
            fail(f"'class_names' has {len(names)} names for {num_classes} classes")
    if info.get("stdcl") is not None and not isinstance(info["stdcl"], bool):
        fail(f"'stdcl' must be true or false, got {_type_name(info['stdcl'])}")
    for key in ("epoch", "global_step"):
        if info.get(key) is not None:
            _int(info[key], key, 0, 10**12, fail)
    head = (info.get("head") or {}).get("head")
    if head is not None:
        if not isinstance(head, dict):
            fail(f"'head.head' (the STD-CL head's options) must be an object, got {_type_name(head)}")
        _json_value(head, "head.head", fail)
        for key, (low, high) in HEAD_INTS.items():
            if key in head:
                _int(head[key], f"head.head.{key}", low, high, fail)
    return info


def _layout(layout: str | dict, fail) -> Layout:
    try:
        resolved = get_layout(layout)
        resolved.parents  # noqa: B018 - the bone tree must be a tree rooted at the centre
    except ConfigError as e:
        fail(f"'encoder.layout': {e}")
    return resolved
