"""stdcl.data.sequence: one sequence file read on its own; true classes from benchmark file names."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stdcl.data import sequence as up
from stdcl.data.classes import UCLA_CLASSES, ntu_classes
from stdcl.errors import DataError


def test_ntu_and_ucla_names_give_the_true_class():
    assert up.label_from_name("S001C001P001R001A007", ntu_classes(60)) == 6
    assert up.label_from_name("S001C001P001R001A099", ntu_classes(60)) is None  # not an NTU60 action
    assert up.label_from_name("a12_s01_e00_v03", list(UCLA_CLASSES)) == 9
    assert up.label_from_name("S001C001P001R001A007", [f"c{i}" for i in range(60)]) is None
    assert up.benchmark_of(ntu_classes(120)) == "NTU RGB+D" and up.benchmark_of(list(UCLA_CLASSES)) == "NW-UCLA"
    assert up.benchmark_of([f"c{i}" for i in range(60)]) is None


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_npy_upload_mutations_give_a_sequence_or_a_data_error(tmp_path, data):
    """Truncated, byte-flipped, re-typed or re-shaped .npy uploads: a finite (C, T, V, M) array or DataError."""
    arr = np.random.default_rng(0).normal(size=(3, 6, 4, 1)).astype(np.float32)
    kind = data.draw(st.sampled_from(["bytes", "dtype", "shape"]))
    path = tmp_path / "seq.npy"
    if kind == "dtype":
        np.save(path, arr.astype(data.draw(st.sampled_from(["<U3", "?", "c8", "f2", "i1", "V4", "M8[s]"]))))
    elif kind == "shape":
        shape = data.draw(st.sampled_from([(72,), (3, 24), (6, 4, 3), (1, 3, 6, 4, 1), (0, 6, 4, 1)]))
        np.save(path, arr.ravel()[: int(np.prod(shape))].reshape(shape))
    else:
        np.save(path, arr)
        raw = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
    try:
        out = up.read_sequence(path)
    except DataError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)
        return
    assert out.ndim == 4 and out.dtype == np.float32 and np.isfinite(out).all()
