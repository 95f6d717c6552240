"""The resume state: tensors in safetensors, everything else in JSON (never pickle).

``state.json`` is the commit point: it names the tensor file it belongs to
(``state-<step>.safetensors``, written first), so a run killed while saving keeps the
previous, consistent pair. Nested structures (optimiser state dicts, RNG states) are split
by :func:`split_tensors`: each tensor is replaced by ``{"__tensor__": key}``, mappings with
non-string keys by ``{"__items__": [[key, value], ...]}`` and tuples by ``{"__tuple__": [...]}``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from stdcl.checkpoint import read_tensors
from stdcl.errors import DataError
from stdcl.io import atomic_path, write_json_atomic

STATE_JSON = "state.json"


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
    """Write ``state`` (nested; tensors anywhere) as ``state-<step>.safetensors`` + ``state.json``."""
    run_dir = Path(run_dir)
    tensors: dict[str, torch.Tensor] = {}
    tree = split_tensors(state, "s", tensors)
    step = int(state.get("global_step", 0))
    name = f"state-{step:09d}.safetensors"
    with atomic_path(run_dir / name) as tmp:
        save_file(tensors, str(tmp))
    write_json_atomic(run_dir / STATE_JSON, {"format": "stdcl-train-state", "tensors": name, "state": tree})
    for old in run_dir.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return run_dir / STATE_JSON


def load_state(run_dir: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Read the state written by :func:`save_state` (one-line errors)."""
    run_dir = Path(run_dir)
    jp = run_dir / STATE_JSON
    try:
        info = json.loads(jp.read_text())
    except FileNotFoundError:
        raise DataError(jp, "no training state to resume from (the run saved no checkpoint yet)") from None
    except ValueError as e:
        raise DataError(jp, f"not valid JSON ({e})") from None
    if info.get("format") != "stdcl-train-state":
        raise DataError(jp, "not a stdcl training state")
    tp = run_dir / info["tensors"]
    return join_tensors(info["state"], read_tensors(tp, map_location))


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
