"""stdcl.vectors.unit_rows: the one L2 normalisation (embeddings, probes, metrics, attributions)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from stdcl.vectors import unit_rows


def test_unit_rows_keep_dtype_zero_rows_and_direction():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]], np.float32)
    u = unit_rows(x)
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], rtol=1e-6)
    assert unit_rows(np.array([[1, 1]])).dtype == np.float64  # integers: float64


def test_far_off_float32_rows_do_not_overflow():
    x = np.full((2, 64), 1e20, np.float32)  # squares overflow float32 (what a far-off uploaded sequence gives)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u = unit_rows(x)
    np.testing.assert_allclose(np.linalg.norm(u.astype(np.float64), axis=1), 1.0, rtol=1e-6)


@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 8)),
              elements=st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False)))
def test_every_row_is_unit_or_zero(x):
    u = unit_rows(x)
    norms = np.linalg.norm(u.astype(np.float64), axis=1)
    zero = ~x.any(axis=1)
    assert np.all(norms[zero] == 0)
    assert norms[~zero] == pytest.approx(1.0, rel=1e-5)
