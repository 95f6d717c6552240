"""The resume state: tensors in safetensors, everything else in JSON (never pickle).

``state-<step>.safetensors`` holds the tensors and, in its header, the JSON rest (so each such
file is a complete state by itself); ``state.json`` is the commit point: written after it, it
names the tensor file it belongs to and repeats the JSON rest for people to read. A run killed
while saving keeps the previous, consistent pair; while a run trains, the state before the
latest is kept as well, so a damaged ``state.json`` or latest state file falls back to it (with
a warning); a run that ends keeps only its latest.

Nested structures (optimiser state dicts, RNG states) are split by :func:`split_tensors`: each
tensor is replaced by ``{"__tensor__": key}``, mappings with non-string keys by
``{"__items__": [[key, value], ...]}`` and tuples by ``{"__tuple__": [...]}``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from stdcl.checkpoint import read_tensors
from stdcl.errors import DataError
from stdcl.io import atomic_path, parse_json, read_json, write_json_atomic
from stdcl.train.faults import fault_point
from stdcl.train.run_dir import STATE_FILES, STATE_JSON

FORMAT = "stdcl-train-state"
_TENSOR_NAME = re.compile(r"^state-(\d{9})\.safetensors$")
#: Entries every saved state has, with their types (a state missing one, or holding another type, is damaged).
_REQUIRED = {"global_step": int, "epoch": int, "batch_in_epoch": int, "model": dict, "optimizer": dict,
             "schedule": dict, "rng": list}

log = logging.getLogger("stdcl.train")


def split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of ``obj`` with its tensors moved into ``tensors`` under dotted keys."""
    if isinstance(obj, torch.Tensor):
        key = prefix
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = prefix
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: split_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, split_tensors(v, f"{prefix}.{i}", tensors)] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in the training state")


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy()
        if "__items__" in obj:
            return {(tuple(k) if isinstance(k, list) else k): join_tensors(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save_state(run_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (nested; tensors anywhere) as ``state-<step>.safetensors``, then ``state.json``;
    remove the older state files but the one committed before (the fallback of :func:`load_state`)."""
    run_dir = Path(run_dir)
    tensors: dict[str, torch.Tensor] = {}
    tree = split_tensors(state, "s", tensors)
    step = int(state.get("global_step", 0))
    name = f"state-{step:09d}.safetensors"
    previous = _committed_name(run_dir)
    with atomic_path(run_dir / name) as tmp:
        save_file(tensors, str(tmp), metadata={FORMAT: json.dumps(tree)})
        fault_point("state-partial")
    fault_point("state-tensors")
    write_json_atomic(run_dir / STATE_JSON, {"format": FORMAT, "tensors": name, "state": tree})
    fault_point("state-json")
    if previous != name:  # saving the same step again keeps the fallback the first save kept
        _remove_states(run_dir, keep=(name, previous))
    return run_dir / STATE_JSON


def keep_latest_state(run_dir: str | os.PathLike) -> None:
    """Remove every state file but the committed one (a run that ended needs no fallback)."""
    _remove_states(Path(run_dir), keep=(_committed_name(Path(run_dir)),))


def _remove_states(run_dir: Path, keep: tuple[str | None, ...]) -> None:
    if keep[0] is None:  # nothing committed that could be read: keep everything
        return
    for old in run_dir.glob(STATE_FILES):
        if old.name not in keep:
            old.unlink(missing_ok=True)


def load_state(run_dir: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Read the state written by :func:`save_state`: the one ``state.json`` commits or, when that (or its
    tensor file) is missing or damaged, the newest complete state file (a warning says so).
    Otherwise a one-line :class:`DataError` naming the damaged file and what is wrong."""
    run_dir = Path(run_dir)
    try:
        return _load_committed(run_dir, map_location)
    except DataError as problem:
        committed = _committed_name(run_dir)
        for path in sorted(run_dir.glob(STATE_FILES), reverse=True):
            if path.name == committed:
                continue
            try:
                state = _load_state_file(path, None, map_location)
            except DataError:
                continue
            log.warning("%s; resuming from %s (global step %d) instead", problem, path.name, state["global_step"])
            return state
        raise problem from None


def _committed_name(run_dir: Path) -> str | None:
    """The tensor file ``state.json`` names, if it can be read."""
    try:
        info = read_json(run_dir / STATE_JSON, "training state")
    except DataError:
        return None
    return info.get("tensors") if isinstance(info, dict) else None


def _load_committed(run_dir: Path, map_location: str) -> dict[str, Any]:
    jp = run_dir / STATE_JSON
    if not jp.exists():
        raise DataError(jp, "no training state to resume from (the run saved no checkpoint yet)")
    info = read_json(jp, "training state")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(jp, "not a stdcl training state (no \"format\": \"stdcl-train-state\")")
    name = info.get("tensors")
    if not isinstance(name, str) or not _TENSOR_NAME.match(name):
        raise DataError(jp, f"\"tensors\" must name a state-<step>.safetensors file, got {name!r}")
    if not (run_dir / name).is_file():
        raise DataError(jp, f"names {name}, which does not exist")
    return _load_state_file(run_dir / name, info.get("state"), map_location, jp)


def _load_state_file(path: Path, listed: Any, map_location: str, listed_in: Path | None = None) -> dict[str, Any]:
    """The state in ``path``: its header's JSON rest (else ``listed``, from ``state.json`` of an older
    version) joined with its tensors, checked; a :class:`DataError` naming the damaged file otherwise."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(FORMAT)
    except (SafetensorError, OSError) as e:
        raise DataError(path, f"not a readable safetensors file ({e})") from None
    source = path if header is not None else listed_in or path
    tree = parse_json(header, path, "training state") if header is not None else listed
    if header is not None and listed is not None and json.dumps(listed, sort_keys=True) != \
            json.dumps(tree, sort_keys=True):
        log.warning("%s differs from the state stored in %s (edited?); using the latter", listed_in, path.name)
    if not isinstance(tree, dict):
        raise DataError(source, "holds no training state")
    tensors = read_tensors(path, map_location)
    try:
        state = join_tensors(tree, tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(source, f"the state does not match its tensors ({type(e).__name__}: {e})") from None
    for key, kind in _REQUIRED.items():
        v = state.get(key)
        if not isinstance(v, kind) or isinstance(v, bool) or (kind is int and v < 0):
            want = "a whole number >= 0" if kind is int else f"a {'mapping' if kind is dict else 'list'}"
            raise DataError(source, f"state entry {key!r} must be {want}, got {_short(v)}")
    m = _TENSOR_NAME.match(path.name)
    if m and int(m.group(1)) != state["global_step"]:
        raise DataError(source, f"global_step {state['global_step']} does not match the file name {path.name}")
    return state


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# -- RNG states ---------------------------------------------------------------------------

def rng_state(dataset_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Every process-wide RNG state (torch CPU and CUDA, numpy legacy, python) and the dataset's Generator."""
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _py_state_to_json(random.getstate()),
        "numpy_legacy": {"name": np_state[0], "keys": np_state[1].tolist(), "pos": int(np_state[2]),
                         "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    if dataset_rng is not None:
        out["dataset"] = json.loads(json.dumps(dataset_rng.bit_generator.state))
    return out


def set_rng_state(state: dict[str, Any], dataset_rng: np.random.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    random.setstate(_py_state_from_json(state["python"]))
    nl = state["numpy_legacy"]
    np.random.set_state((nl["name"], np.asarray(nl["keys"], dtype=np.uint32), nl["pos"], nl["has_gauss"],
                         nl["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([c.to(torch.uint8).cpu() for c in cuda])
    if dataset_rng is not None and "dataset" in state:
        dataset_rng.bit_generator.state = state["dataset"]


def _py_state_to_json(st: tuple) -> dict[str, Any]:
    version, internal, gauss = st
    return {"version": version, "internal": list(internal), "gauss_next": gauss}


def _py_state_from_json(d: dict[str, Any]) -> tuple:
    return (d["version"], tuple(d["internal"]), d["gauss_next"])
