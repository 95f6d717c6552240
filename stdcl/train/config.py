"""Training configs: packaged YAML layers merged with command-line choices and ``key=value`` overrides.

Layers, later wins (each a nested mapping, merged key by key):

1. ``stdcl/configs/base.yaml``: every key with its default;
2. the protocol file ``stdcl/configs/<protocol>.yaml`` (ntu60-xsub, ntu60-xview,
   ntu120-xsub, ntu120-xset, ucla, natops, synthetic, custom): data settings;
3. ``stdcl/configs/encoder/<encoder>.yaml``: the encoder's reference recipe, then its
   ``datasets: <protocol>:`` section where the reference differs per dataset;
4. a user YAML file given as ``--config FILE`` (its optional ``base: <protocol>`` names
   the protocol it builds on, default ``custom``);
5. ``--encoder``, ``--modality``, ``--stdcl on|off``;
6. ``key=value`` overrides: dotted keys, YAML-parsed values (``train.epochs=2``,
   ``schedule.milestones=[10,20]``, ``data.path=/data/ntu``).

Unknown keys are errors (with a suggestion), except inside the free-form mappings
``data.transform``, ``data.test_transform``, ``data.source`` and ``model.options``.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from stdcl.checkpoint import BUNDLED_PREFIX
from stdcl.checkpoint_schema import HEAD_INTS
from stdcl.data.registry import protocols
from stdcl.encoders.registry import spec as encoder_spec
from stdcl.errors import ConfigError

#: the packaged protocols: one per dataset that has one (stdcl.data.registry), and ``custom``
PROTOCOLS = (*protocols(), "custom")
#: Mappings whose keys are passed through to other components unchecked.
FREE_FORM = {("data", "transform"), ("data", "test_transform"), ("data", "source"), ("model", "options")}


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` / ``1e32`` as floats (YAML 1.2; PyYAML's 1.1 needs a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats."""
    return yaml.load(text, Loader=_Loader)


def _packaged(name: str) -> dict[str, Any]:
    """A packaged YAML file (``"base"``, ``"ucla"``, ``"encoder/ctrgcn"``) as a mapping."""
    parts = name.split("/")
    node = resources.files("stdcl.configs")
    for p in parts[:-1]:
        node = node / p
    node = node / f"{parts[-1]}.yaml"
    if not node.is_file():
        raise ConfigError(f"no packaged config {name!r}")
    return _as_mapping(yaml_load(node.read_text()), f"stdcl/configs/{name}.yaml")


def _as_mapping(obj: Any, where: str) -> dict[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(obj).__name__}")
    return obj


def schema() -> dict[str, Any]:
    """Every key a resolved config may hold (``base.yaml`` plus the recorded protocol and file)."""
    return _packaged("base") | {"protocol": None, "config_file": None}


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file as a mapping (one-line errors)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    try:
        return _as_mapping(yaml_load(text), str(p))
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to read") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}:{where} invalid YAML ({getattr(e, 'problem', None) or e})") from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in (mappings recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=2"`` -> (["train", "epochs"], 2); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (e.g. train.epochs=2)")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not valid YAML: keep the text
    return key.split("."), value


def set_dotted(cfg: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``cfg[k1][k2]... = value``, creating mappings on the way."""
    node = cfg
    for k in keys[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            if nxt is not None and k in node:
                raise ConfigError(f"cannot set {'.'.join(keys)}: {k} is not a mapping")
            nxt = node[k] = {}
        node = nxt
    node[keys[-1]] = value


def get_dotted(cfg: dict[str, Any], key: str, default: Any = None) -> Any:
    node: Any = cfg
    for k in key.split("."):
        if not isinstance(node, dict) or k not in node:
            return default
        node = node[k]
    return node


def check_keys(cfg: dict[str, Any], schema: dict[str, Any], prefix: tuple[str, ...] = ()) -> None:
    """Raise a :class:`ConfigError` for a key the schema (``base.yaml``) does not have."""
    for k, v in cfg.items():
        path = prefix + (str(k),)
        if k not in schema:
            close = difflib.get_close_matches(str(k), list(schema), n=1)
            hint = f"; did you mean {'.'.join(prefix + (close[0],))}?" if close else \
                f"; known: {', '.join(schema)}"
            raise ConfigError(f"unknown config key {'.'.join(path)}{hint}")
        if path in FREE_FORM:
            if v is not None and not isinstance(v, dict):
                raise ConfigError(f"config key {'.'.join(path)} must be a mapping, got {v!r}")
            continue
        if isinstance(schema[k], dict):
            if v is None:
                continue
            if not isinstance(v, dict):
                raise ConfigError(f"config key {'.'.join(path)} must be a mapping, got {v!r}")
            check_keys(v, schema[k], path)


def _protocol_chain(config: str | os.PathLike) -> tuple[str, dict[str, Any] | None, Path | None]:
    """(protocol, user file mapping or None, user file path or None) for ``--config``."""
    text = os.fspath(config)
    if text in PROTOCOLS:
        return text, None, None
    p = Path(text)
    if p.suffix in (".yaml", ".yml") or p.exists():
        user = read_yaml(p)
        base = user.pop("base", "custom")
        if base not in PROTOCOLS:
            raise ConfigError(f"{p}: base {base!r} is not a packaged protocol; choose from {', '.join(PROTOCOLS)}")
        return base, user, p
    raise ConfigError(f"unknown config {text!r}: give a protocol ({', '.join(PROTOCOLS)}) or a YAML file")


def load_config(config: str | os.PathLike = "synthetic", encoder: str | None = None, modality: str | None = None,
                stdcl: bool | str | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The resolved training config (see the module docstring for the layers).

    Args:
        config: a protocol name or a YAML file (optionally with ``base: <protocol>``).
        encoder: a registered encoder (``stdcl.encoders.available()``; default: the config's).
        modality: ``joint``, ``bone``, ``joint_motion`` or ``bone_motion``.
        stdcl: ``True``/``"on"`` to train with the STD-CL head, ``False``/``"off"`` without.
        overrides: ``key=value`` strings, applied last.
    """
    base = _packaged("base")
    protocol, user, user_path = _protocol_chain(config)
    parsed = [parse_override(o) for o in overrides]
    cfg = deep_merge(base, _packaged(protocol))
    # the encoder decides which overlay applies: command line > overrides > user file > protocol
    name = encoder
    for keys, value in parsed:
        if keys == ["model", "encoder"]:
            name = name or value
    if name is None and user is not None:
        name = get_dotted(user, "model.encoder")
    name = name or cfg["model"]["encoder"]
    overlay = _packaged(encoder_spec(name).recipe)
    per_dataset = overlay.pop("datasets", {}) or {}
    cfg = deep_merge(cfg, overlay)
    cfg = deep_merge(cfg, per_dataset.get(protocol, {}) or {})
    if user is not None:
        check_keys(user, base)
        cfg = deep_merge(cfg, user)
    cfg["model"]["encoder"] = name
    if modality is not None:
        cfg["data"]["modality"] = modality
    if stdcl is not None:
        cfg["stdcl"]["enabled"] = parse_on_off(stdcl)
    for keys, value in parsed:
        set_dotted(cfg, keys, value)
    if cfg["model"]["encoder"] != name:
        raise ConfigError("model.encoder was changed by an override after the encoder recipe was chosen; "
                          "use --encoder NAME instead")
    cfg["protocol"] = protocol
    cfg["config_file"] = str(user_path) if user_path else None
    check_keys(cfg, schema())
    validate(cfg)
    for section, key in (("data", "path"), ("train", "init_from")):  # a run is analysed from anywhere: absolute
        value = cfg[section][key]
        if value and not str(value).startswith(BUNDLED_PREFIX):
            cfg[section][key] = os.path.abspath(os.path.expanduser(value))
    return cfg


def parse_on_off(value: bool | str) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).lower()
    if v in ("on", "true", "yes", "1"):
        return True
    if v in ("off", "false", "no", "0"):
        return False
    raise ConfigError(f"expected on or off, got {value!r}")


#: Numeric keys: ``"[int] [?] <interval>"``; ``int`` where only whole numbers make sense, ``?`` where null
#: is allowed (off / the dataset's default), the interval with ``[``/``]`` for included and ``(``/``)`` for
#: excluded bounds (``inf``: none). Every number must be finite (no NaN, no infinity). A test checks that
#: every numeric key of ``base.yaml`` has a rule here, so a new option cannot slip past validation.
NUMBERS = {
    "seed": "int [0, 4294967295]",
    "data.window": "int ? [1, inf)",
    "data.repeat": "int ? [1, inf)",
    "data.num_workers": "int [0, inf)",
    "data.val_fraction": "[0, 1)",
    "data.val_seed": "int [0, 4294967295]",
    "stdcl.head.reduction": f"int [{HEAD_INTS['reduction'][0]}, {HEAD_INTS['reduction'][1]}]",  # what a checkpoint
    "stdcl.head.dim": f"int [{HEAD_INTS['dim'][0]}, {HEAD_INTS['dim'][1]}]",  # may record (checkpoint_schema)
    "stdcl.loss.num_pos": "int [1, inf)",
    "stdcl.loss.num_neg": "int [1, inf)",
    "stdcl.loss.tau": "(0, inf)",
    "stdcl.loss.weight": "[0, inf)",
    "stdcl.loss.queue_length": "int ? [1, inf)",
    "stdcl.loss.scale_fraction": "(0, 1]",
    "stdcl.loss.start_epoch": "[0, inf)",
    "stdcl.loss.ramp_epochs": "[0, inf)",
    "optim.lr": "[0, inf)",
    "optim.momentum": "[0, 1)",
    "optim.weight_decay": "[0, inf)",
    "optim.grad_clip": "? [0, inf)",
    "schedule.warmup_epochs": "[0, inf)",
    "schedule.gamma": "(0, inf)",
    "schedule.min_lr": "[0, inf)",
    "train.epochs": "int [1, inf)",
    "train.batch_size": "int [1, inf)",
    "train.eval_batch_size": "int [1, inf)",
    "train.max_steps": "int ? [1, inf)",
    "train.log_every": "int [1, inf)",
    "train.eval_every": "int [0, inf)",
    "train.checkpoint_every_steps": "int ? [1, inf)",
    "probe.max_samples": "int [1, 100000]",
    "probe.seed": "int [0, 4294967295]",
    "probe.dim": "int [1, 4096]",
    "probe.snapshots": "int [1, 1000]",
    "debug.stop_after_steps": "int ? [1, inf)",
    "debug.nan_at_step": "int ? [1, inf)",
}
#: Keys with a fixed set of values (``train.amp: false`` is read as ``off``).
CHOICES = {"optim.name": ("sgd", "adam", "adamw"), "schedule.kind": ("step", "cosine", "exponential", "constant"),
           "train.amp": ("auto", "off", "fp16", "bf16"), "train.tensorboard": ("auto", True, False),
           "stdcl.head.pooling": ("mean", "attention"), "stdcl.head.init": ("kaiming", "released"),
           "stdcl.loss.bank": ("per_sample", "class_queue"), "probe.split": ("test", "val"),
           "data.modality": ("joint", "bone", "joint_motion", "bone_motion")}
#: Keys whose null default stands for a text value (a path).
OPTIONAL_TEXT = ("data.path", "train.init_from")
_INTERVAL = re.compile(r"^(int )?(\? )?([\[(])(\S+), (\S+)([\])])$")


def validate(cfg: dict[str, Any]) -> None:
    """Check a resolved config (one-line :class:`ConfigError` naming the key): every key of ``base.yaml``
    present; numbers finite and within :data:`NUMBERS`; :data:`CHOICES`; every other key of the type of
    its default (true/false, text, list)."""
    leaves = dict(_leaves(schema()))
    for key, default in leaves.items():
        v = _get_required(cfg, key)
        if key in NUMBERS:
            _check_number(key, v, NUMBERS[key])
        elif key in CHOICES:
            if key == "train.amp" and v is False:
                v = cfg["train"]["amp"] = "off"
            allowed = CHOICES[key]
            if not any(type(v) is type(a) and v == a for a in allowed):  # 1 is not true, nor 0 false
                names = ", ".join(str(a).lower() if isinstance(a, bool) else a for a in allowed)
                raise ConfigError(f"config key {key} must be one of {names}; got {v!r}")
        elif key in OPTIONAL_TEXT:
            if v is not None and not isinstance(v, str):
                raise ConfigError(f"config key {key} must be a path or null, got {v!r}")
        elif isinstance(default, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"config key {key} must be true or false, got {v!r}")
        elif isinstance(default, str) and not isinstance(v, str):
            raise ConfigError(f"config key {key} must be text, got {v!r}")
    ms = cfg["schedule"]["milestones"]
    if not isinstance(ms, list) or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in ms):
        raise ConfigError(f"config key schedule.milestones must be a list of epochs (whole numbers >= 0), got {ms!r}")
    betas = cfg["optim"]["betas"]
    if not (isinstance(betas, list) and len(betas) == 2
            and all(_in_interval(b, False, 0, True, 1, False) for b in betas)):
        raise ConfigError(f"config key optim.betas must be two numbers in [0, 1), got {betas!r}")
    br = cfg["stdcl"]["head"]["branches"]
    if not (isinstance(br, list) and br and set(br) <= {"spatial", "temporal"} and len(set(br)) == len(br)):
        raise ConfigError(f"config key stdcl.head.branches must be a non-empty list of spatial, temporal; got {br!r}")
    if cfg["stdcl"]["loss"]["bank"] == "class_queue" and cfg["stdcl"]["loss"]["queue_length"] is None:
        raise ConfigError("config key stdcl.loss.queue_length must be set for stdcl.loss.bank=class_queue")
    _check_free_form(cfg)


def _check_free_form(cfg: dict[str, Any]) -> None:
    """The free-form mappings: transform options by name, type and range for the dataset's transform;
    model options and source options as mappings of plain values with finite numbers."""
    from stdcl.data.registry import DATASETS
    from stdcl.data.transforms import check_transform_options

    for section, key in sorted(FREE_FORM):
        value = cfg[section].get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"config key {section}.{key} must be a mapping, got {value!r}")
        for name, leaf in _leaves(value, f"{section}.{key}."):
            if isinstance(leaf, float) and not math.isfinite(leaf):
                raise ConfigError(f"config key {name} must be a finite number, got {leaf!r}")
    dataset = DATASETS.get(cfg["data"]["dataset"])
    if dataset is not None:
        for key, train in (("transform", True), ("test_transform", False)):
            try:
                check_transform_options(dataset.transform, train, cfg["data"].get(key) or {})
            except ConfigError as e:
                raise ConfigError(f"config key data.{key}: {e}") from None


def _leaves(tree: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted key, default) of every checked key of a schema (free-form mappings are not descended)."""
    for k, v in tree.items():
        key = prefix + k
        if isinstance(v, dict) and tuple(key.split(".")) not in FREE_FORM:
            yield from _leaves(v, key + ".")
        else:
            yield key, v


def _get_required(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    parts = key.split(".")
    for i, k in enumerate(parts):
        if not isinstance(node, dict):
            raise ConfigError(f"config key {'.'.join(parts[:i])} must be a mapping, got {node!r}")
        if k not in node:
            raise ConfigError(f"config key {key} is missing")
        node = node[k]
    return node


def _check_number(key: str, v: Any, spec: str) -> None:
    integer, optional, lo_br, lo, hi, hi_br = _INTERVAL.match(spec).groups()
    if v is None and optional:
        return
    if not _in_interval(v, bool(integer), float(lo), lo_br == "[", float(hi), hi_br == "]"):
        kind = "a whole number" if integer else "a finite number"
        where = (f">= {lo}" if lo_br == "[" else f"> {lo}") if hi == "inf" else f"in {lo_br}{lo}, {hi}{hi_br}"
        raise ConfigError(f"config key {key} must be {kind} {where}{' or null' if optional else ''}, got {v!r}")


def _in_interval(v: Any, integer: bool, lo: float, lo_in: bool, hi: float, hi_in: bool) -> bool:
    """Whether ``v`` is a (whole, when ``integer``) finite number within the bounds (true/false are not numbers)."""
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        return False
    if not math.isfinite(v):
        return False
    return (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, flow-style lists of scalars (``milestones: [35, 55]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)


def dump_config(cfg: dict[str, Any]) -> str:
    """The config as YAML (key order kept)."""
    return yaml.dump(cfg, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)
