"""Grid files: a base training command, axes to vary, per-cell overrides; expanded into cells.

A grid file (YAML)::

    name: ucla-ctrgcn-reference          # folder name of its runs and results (default: file stem)
    description: ...                      # free text, shown by `plan` and in tables
    base:                                 # what `stdcl train` takes
      config: ucla                        # --config (protocol or YAML file, relative to the grid file)
      encoder: ctrgcn                     # --encoder
      modality: joint                     # --modality
      stdcl: on                           # --stdcl
      overrides: {train.epochs: 8, data.path: ../shared/data/nw_ucla_ctrgcn}   # key=value (mapping or list)
    axes:                                 # every combination is one run, in this order
      stdcl: [off, on]
      seed: [1, 2, 3]                     # `config`, `encoder`, `modality`, `stdcl` or any config key
    cells:                                # optional overrides for the cells that match `when`
      - when: {encoder: hyperformer}
        overrides: {optim.lr: 0.025}
    runs: /scratch/runs                   # optional default for --runs (relative to the grid file)

Named settings (ablations) go in ``variants`` and the axis ``variant``::

    variants:
      baseline: {stdcl.enabled: false}    # a variant with STD-CL off is the rows' shared baseline
      scaled: {stdcl.loss.scale_to_data: true}
      queue: {stdcl.loss.bank: class_queue, stdcl.loss.queue_length: 64}
    axes:
      variant: [baseline, scaled, queue]
      seed: [1, 2, 3]

A cell's run name is derived from its axis values, in axis order, as ``key-value`` joined by
``_`` (``stdcl-off_seed-1``; any other character, ``_`` included, becomes ``-``), so the same grid always
maps to the same run directories.
Relative ``data.path`` / ``train.init_from`` / ``config`` values are read relative to the grid
file, so a grid runs from any working directory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stdcl.errors import ConfigError, DataError

#: Axes that are command-line choices of ``stdcl train`` rather than config keys.
CHOICE_AXES = ("config", "encoder", "modality", "stdcl")
#: Config keys that change how a run executes or where its data lives, not what it computes: left out of
#: the digest (so a grid moved to another machine with the data elsewhere still matches its runs).
EXECUTION_KEYS = ("device", "config_file", "data.path", "data.num_workers", "train.progress", "train.tensorboard",
                  "train.log_every", "train.checkpoint_every_steps", "train.eval_batch_size", "probe")
#: Override keys whose relative paths are read relative to the grid file.
PATH_KEYS = ("data.path", "train.init_from")
_GRID_KEYS = {"name", "description", "base", "axes", "cells", "runs", "variants"}
#: The axis whose values name entries of the grid's ``variants`` (each a set of overrides).
VARIANT_AXIS = "variant"
_BASE_KEYS = {"config", "encoder", "modality", "stdcl", "overrides"}
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class Cell:
    """One run of a grid: its axis values and the ``stdcl train`` arguments that make it."""

    name: str
    values: dict[str, Any]
    config: str
    encoder: str | None
    modality: str | None
    stdcl: str | None
    overrides: tuple[str, ...] = field(default=())

    def train_args(self) -> list[str]:
        """The ``stdcl train`` arguments of this cell (without ``--out``)."""
        args = ["--config", self.config]
        for flag in ("encoder", "modality", "stdcl"):
            if getattr(self, flag) is not None:
                args += [f"--{flag}", str(getattr(self, flag))]
        return args + list(self.overrides)

    def resolved_config(self) -> dict[str, Any]:
        """The training config this cell runs (every key), as ``stdcl train`` resolves it."""
        from stdcl.train.config import load_config

        return load_config(self.config, encoder=self.encoder, modality=self.modality, stdcl=self.stdcl,
                           overrides=self.overrides)

    def group(self, drop: tuple[str, ...] = ("seed",)) -> tuple[tuple[str, str], ...]:
        """The cell's axis values without ``drop`` (cells that differ only there are aggregated)."""
        return tuple((k, format_value(v)) for k, v in self.values.items() if k not in drop)


@dataclass(frozen=True)
class Grid:
    """A parsed grid file."""

    path: Path
    name: str
    description: str
    cells: tuple[Cell, ...]
    axes: dict[str, list[Any]]
    runs: Path | None

    def cell(self, name: str) -> Cell:
        for c in self.cells:
            if c.name == name:
                return c
        raise ConfigError(f"{self.path}: no cell named {name!r}")


def format_value(value: Any) -> str:
    """An axis value as it appears in run names and tables (``on``/``off`` for booleans)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def cell_name(values: dict[str, Any]) -> str:
    """``{"stdcl": False, "seed": 1}`` -> ``"stdcl-off_seed-1"`` (deterministic, file-name safe)."""
    if not values:
        return "run"
    return "_".join(f"{_slug(k)}-{_slug(format_value(v))}" for k, v in values.items())


def _override_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, dict)) or value is None:
        text = json.dumps(value)
    else:
        text = str(value)
    return f"{key}={text}"


def _overrides(raw: Any, where: str, path: Path) -> list[tuple[str, Any]]:
    """``{k: v}`` or ``["k=v", ...]`` as (key, value) pairs in order."""
    from stdcl.train.config import parse_override

    if raw is None:
        return []
    if isinstance(raw, dict):
        out = []
        for k, v in raw.items():
            if not isinstance(k, str) or not k or any(not p for p in k.split(".")):
                raise DataError(path, f"{where}: override key {k!r} is not a dotted config key")
            out.append((k, v))
        return out
    if isinstance(raw, list):
        out = []
        for item in raw:
            if not isinstance(item, str):
                raise DataError(path, f"{where}: overrides must be 'key=value' strings, got {item!r}")
            try:
                keys, value = parse_override(item)
            except ConfigError as e:
                raise DataError(path, f"{where}: {e}") from None
            out.append((".".join(keys), value))
        return out
    raise DataError(path, f"{where}: overrides must be a mapping or a list of 'key=value', got {type(raw).__name__}")


def _relative_to(path: Path, key: str, value: Any) -> Any:
    """Path values: ``$VAR`` / ``${VAR}`` expanded (an unset variable is an error), then made absolute
    relative to the grid file."""
    if key not in PATH_KEYS or not isinstance(value, str) or not value:
        return value
    expanded = os.path.expandvars(os.path.expanduser(value))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:
        raise DataError(path, f"{key}: {value!r} uses ${unset[0]}, which is not set (export {unset[0]}=...)")
    if not os.path.isabs(expanded):
        return str((path.parent / expanded).resolve())
    return expanded


def _config_arg(path: Path, value: Any) -> str:
    from stdcl.train.config import PROTOCOLS

    text = str(value)
    if text in PROTOCOLS:
        return text
    p = Path(os.path.expanduser(text))
    return str(p if p.is_absolute() else (path.parent / p).resolve())


def _choice(value: Any, axis: str) -> str | None:
    if value is None:
        return None
    if axis == "stdcl":
        return format_value(value) if isinstance(value, bool) else str(value).lower()
    return str(value)


def load_grid(path: str | os.PathLike) -> Grid:
    """Read and expand a grid file; every cell's config is resolved (so typos fail here, not in run 17)."""
    from stdcl.train.config import read_yaml

    p = Path(path)
    if p.is_dir():
        raise DataError(p, "is a folder; give a grid file (.yaml)")
    if not p.is_file():
        raise DataError(p, "no such grid file")
    doc = read_yaml(p)
    unknown = set(doc) - _GRID_KEYS
    if unknown:
        raise DataError(p, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; a grid has "
                           f"{', '.join(sorted(_GRID_KEYS))}")
    name = str(doc.get("name") or p.stem)
    if not _NAME_OK.match(name):
        raise DataError(p, f"name {name!r} must be letters, digits, '.', '_', '+' or '-'")
    if not doc.get("base") and not doc.get("axes"):
        raise DataError(p, "an empty grid: give its base (config, encoder, ...) and/or its axes")
    base = doc.get("base") or {}
    if not isinstance(base, dict):
        raise DataError(p, "base must be a mapping (config, encoder, modality, stdcl, overrides)")
    bad = set(base) - _BASE_KEYS
    if bad:
        raise DataError(p, f"base: unknown key(s) {', '.join(sorted(map(str, bad)))}; "
                           f"known: {', '.join(sorted(_BASE_KEYS))}")
    axes = doc.get("axes") or {}
    if not isinstance(axes, dict):
        raise DataError(p, "axes must be a mapping of axis -> list of values")
    for axis, values in axes.items():
        if not isinstance(axis, str) or not axis:
            raise DataError(p, f"axes: {axis!r} is not an axis name")
        if not isinstance(values, list) or not values:
            raise DataError(p, f"axes: {axis} must be a non-empty list of values")
        if len({format_value(v) for v in values}) != len(values):
            raise DataError(p, f"axes: {axis} repeats a value")
    rules = doc.get("cells") or []
    if not isinstance(rules, list):
        raise DataError(p, "cells must be a list of {when: {...}, overrides: {...}}")
    parsed_rules = []
    for i, rule in enumerate(rules):
        where = f"cells[{i}]"
        if not isinstance(rule, dict) or set(rule) - {"when", "overrides"} or not isinstance(rule.get("when"), dict):
            raise DataError(p, f"{where} must be a mapping with `when` (a mapping) and `overrides`")
        for k in rule["when"]:
            if k not in axes:
                raise DataError(p, f"{where}.when: {k!r} is not an axis of this grid")
        parsed_rules.append(({k: format_value(v) for k, v in rule["when"].items()},
                             _overrides(rule.get("overrides"), f"{where}.overrides", p)))
    base_over = _overrides(base.get("overrides"), "base.overrides", p)
    variants = _variants(doc.get("variants"), axes.get(VARIANT_AXIS), p)
    cells = []
    names: set[str] = set()
    for combo in itertools.product(*axes.values()) if axes else [()]:
        values = dict(zip(axes, combo))
        choices = {k: base.get(k) for k in CHOICE_AXES}
        over = list(base_over)
        for k, v in values.items():
            if k in CHOICE_AXES:
                choices[k] = v
            elif k == VARIANT_AXIS:
                over.extend(variants[format_value(v)])
            else:
                over.append((k, v))
        shown = {k: format_value(v) for k, v in values.items()}
        for when, extra in parsed_rules:
            if all(shown[k] == v for k, v in when.items()):
                over.extend(extra)
        cname = cell_name(values)
        if cname in names:
            raise DataError(p, f"two cells map to the run name {cname!r}; make the axis values distinct")
        names.add(cname)
        cell = Cell(name=cname, values=values, config=_config_arg(p, choices["config"] or "synthetic"),
                    encoder=_choice(choices["encoder"], "encoder"), modality=_choice(choices["modality"], "modality"),
                    stdcl=_choice(choices["stdcl"], "stdcl"),
                    overrides=tuple(_override_text(k, _relative_to(p, k, v)) for k, v in over))
        try:
            cell.resolved_config()
        except ConfigError as e:
            raise DataError(p, f"cell {cname}: {e}") from None
        cells.append(cell)
    runs = doc.get("runs")
    runs_path = None
    if runs is not None:
        runs_path = Path(os.path.expanduser(str(runs)))
        if not runs_path.is_absolute():
            runs_path = (p.parent / runs_path).resolve()
    return Grid(path=p, name=name, description=str(doc.get("description") or ""), cells=tuple(cells),
                axes={k: list(v) for k, v in axes.items()}, runs=runs_path)


def _variants(raw: Any, axis: list[Any] | None, path: Path) -> dict[str, list[tuple[str, Any]]]:
    """``variants`` as name -> overrides; every value of the ``variant`` axis must be one."""
    if raw is None and axis is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise DataError(path, "the variant axis needs `variants`: a mapping of name -> overrides")
    out = {format_value(k): _overrides(v, f"variants.{k}", path) for k, v in raw.items()}
    if axis is None:
        raise DataError(path, "variants are given but there is no `variant` axis to use them")
    unknown = [format_value(v) for v in axis if format_value(v) not in out]
    if unknown:
        raise DataError(path, f"axes: variant {', '.join(unknown)} not in variants ({', '.join(out)})")
    return out


def config_digest(cfg: dict[str, Any]) -> str:
    """A short SHA-256 of a resolved config without the execution-only keys (:data:`EXECUTION_KEYS`)."""
    import copy

    c = copy.deepcopy(cfg)
    for key in EXECUTION_KEYS:
        parts = key.split(".")
        node = c
        for k in parts[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    text = json.dumps(c, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
