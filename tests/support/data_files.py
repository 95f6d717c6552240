"""Small data files in every supported format, written for tests (no real data)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np


def make_ntu_npz(path, n_train=6, n_test=4, classes=60, seed=0, compressed=False):
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = np.zeros((n, 300, 150), np.float32)
        for i in range(n):
            t = 20 + (10 * i) % 280
            x[i, :t, :75] = rng.normal(size=(t, 75))
            if i % 2:
                x[i, :t, 75:] = rng.normal(size=(t, 75))
        y = np.zeros((n, classes), np.float32)
        y[np.arange(n), rng.integers(0, classes, n)] = 1
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    (np.savez_compressed if compressed else np.savez)(path, **out)
    return out


def make_pyskl(path, two_d=False):
    rng = np.random.default_rng(0)
    anns = []
    for k in range(6):
        t = 10 + k
        c = 2 if two_d else 3
        v = 17 if two_d else 25
        a = {"frame_dir": f"S001C001P00{k % 3 + 1}R00{k + 1}A00{k % 3 + 1}", "label": k % 3, "total_frames": t,
             "keypoint": rng.normal(size=(2, t, v, c)).astype(np.float16)}
        if two_d:
            a["keypoint_score"] = rng.random((2, t, v)).astype(np.float16)
        anns.append(a)
    data = {"split": {"xsub_train": [a["frame_dir"] for a in anns[:4]], "xsub_val": [anns[5]["frame_dir"]]},
            "annotations": anns}
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return data


def make_numpy(path, ntvc=False):
    rng = np.random.default_rng(0)
    n = 8
    x = rng.normal(size=(n, 40, 25, 3) if ntvc else (n, 3, 40, 25, 2)).astype(np.float32)
    arrays = dict(x=x, y=np.arange(n) % 4, names=np.array([f"S001C001P{k:03d}R001A001" for k in range(n)]),
                  class_names=np.array(["a", "b", "c", "d"]), layout=np.array("ntu25"),
                  lengths=np.array([40, 30, 20, 10, 40, 1, 5, 40]),
                  split_train=np.arange(6), split_test=np.array([6, 7]),
                  class_meta=np.array(json.dumps([{"name": c} for c in "abcd"])))
    np.savez(path, **arrays)
    return arrays


def write_ucla_json(folder: Path, name: str, obj) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{name}.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def ucla_json_obj(frames: int = 4, label: int = 1) -> dict:
    sk = np.random.default_rng(frames).standard_normal((frames, 20, 3)).round(4).tolist()
    return {"file_name": "x", "skeletons": sk, "label": label}
