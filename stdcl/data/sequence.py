"""One sequence file on its own: a raw NTU ``.skeleton``, an NW-UCLA ``.json`` or a ``.npy`` array.

:func:`read_sequence` reads it with the datasets' own readers (:func:`stdcl.data.ntu_denoise.skeleton_to_array`:
the CTR-GCN actor selection and centring of the NTU preparation; :func:`stdcl.data.ucla.read_ucla_json`),
a ``.npy`` as ``(C, T, V, M)`` or ``(T, V, C)``; :func:`sequence_item` puts it through the item path
of a dataset sample (:class:`stdcl.data.base.SkeletonDataset`), so the result equals what the
dataset gives for the same file. :func:`label_from_name` reads the true class from an NTU or
NW-UCLA file name, :func:`benchmark_of` which benchmark a list of class names is.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import numpy as np

from stdcl.data.base import SampleSource, SkeletonDataset, Transform
from stdcl.data.layouts import Layout
from stdcl.errors import DataError, first_line

#: The sequence formats :func:`read_sequence` reads.
SEQUENCE_SUFFIXES = (".skeleton", ".json", ".npy")
#: The benchmark whose recordings a sequence format holds, and that benchmark's skeleton layout.
FORMAT_ORIGIN = {"skeleton": ("NTU RGB+D", "ntu25"), "json": ("NW-UCLA", "ucla20")}


def read_sequence(path: str | os.PathLike, duplicate_single: bool = False) -> np.ndarray:
    """The raw ``(C, T, V, M)`` float32 sequence of a ``.skeleton``, ``.json`` or ``.npy`` file.

    ``duplicate_single``: a one-actor ``.skeleton`` gets a copy of actor 1 as actor 2 (the NTU120
    preparation does this; NTU60 leaves the second actor zero). DataError naming the file otherwise.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".skeleton":
        from stdcl.data.ntu_denoise import skeleton_to_array

        return skeleton_to_array(path, center=True, duplicate_single=duplicate_single)
    if suffix == ".json":
        from stdcl.data.ucla import read_ucla_json

        return read_ucla_json(path)
    if suffix == ".npy":
        return read_npy_sequence(path)
    raise DataError(path, f"unsupported sequence file; expected one of {', '.join(SEQUENCE_SUFFIXES)}")


def read_npy_sequence(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` of one sequence, ``(C, T, V, M)`` or ``(T, V, C)`` (one person), as finite float32
    ``(C, T, V, M)``; nothing is unpickled."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            header = None
            with contextlib.suppress(ValueError):  # a header numpy cannot parse: np.load says why below
                header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)(fh)
            body = os.fstat(fh.fileno()).st_size - fh.tell()
    except OSError as e:
        raise DataError(path, f"cannot read file ({e.strerror})") from None
    except ValueError:
        raise DataError(path, "not a .npy file (no NumPy header)") from None
    if header is not None and not header[2].hasobject:  # a header's shape is not allocated before it is checked
        need = math.prod(header[0]) * header[2].itemsize
        if need > body:
            raise DataError(path, f"its header declares shape {tuple(header[0])} ({need:,} bytes) but {body:,} bytes "
                                  "follow it; truncated file?")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        problem = ("holds Python objects; only numeric arrays are read (nothing is unpickled)"
                   if "pickle" in str(e) else f"not a readable .npy array ({first_line(e)})")
        raise DataError(path, problem) from None
    except (OSError, EOFError) as e:
        raise DataError(path, f"not a readable .npy array ({type(e).__name__}: truncated file?)") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        raise DataError(path, f"holds {getattr(arr, 'dtype', type(arr))} values, expected numbers")
    if arr.ndim == 3:  # (T, V, C): one person
        if arr.shape[2] not in (2, 3):
            raise DataError(path, f"a 3-d array must be (T, V, C) with C 2 or 3, got shape {arr.shape}")
        arr = arr.transpose(2, 0, 1)[..., None]
    elif arr.ndim != 4:
        raise DataError(path, f"expected (C, T, V, M) or (T, V, C), got shape {arr.shape}")
    if min(arr.shape) == 0:
        raise DataError(path, f"empty array of shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(path, f"{int(bad.sum())} non-finite values (NaN or inf)")
    return arr


class OneSequence(SampleSource):
    """A :class:`SampleSource` of one array, so a dataset's own item path applies to it."""

    format = "upload"

    def __init__(self, x: np.ndarray, name: str, label: int, class_names: list[str], layout: Layout):
        self.x, self.names, self.labels = x, [name], np.asarray([label], dtype=np.int64)
        self.class_names, self.layout = class_names, layout

    def read(self, i: int) -> np.ndarray:
        return self.x.copy()


def sequence_item(raw: np.ndarray, name: str, class_names: list[str], layout: Layout,
                  transform: Transform | None, modality: str, label: int = 0) -> np.ndarray:
    """``raw`` ``(C, T, V, M)`` as a dataset item: ``transform`` (the evaluation transform), then the modality."""
    source = OneSequence(raw, name, label, class_names, layout)
    return SkeletonDataset(source, transform, modality=modality)[0][0]


def label_from_name(name: str, class_names: list[str]) -> int | None:
    """The true class encoded in an NTU (``S...A007``) or NW-UCLA (``a01_s..``) name, when ``class_names``
    are that benchmark's; None otherwise."""
    from stdcl.data.classes import UCLA_CLASSES, ntu_classes
    from stdcl.data.ntu_prepare import parse_sample_name
    from stdcl.data.ucla import ACTION_TO_LABEL, NAME_RE

    k = len(class_names)
    ntu = parse_sample_name(name)
    if ntu is not None and k in (60, 120) and list(class_names) == ntu_classes(k) and ntu.action <= k:
        return ntu.action - 1
    m = NAME_RE.fullmatch(name)
    if m is not None and list(class_names) == list(UCLA_CLASSES):
        return ACTION_TO_LABEL.get(int(m.group(1)))
    return None


def benchmark_of(class_names: list[str]) -> str | None:
    """The benchmark whose classes ``class_names`` are ("NTU RGB+D", "NW-UCLA"), else None."""
    from stdcl.data.classes import UCLA_CLASSES, ntu_classes

    names, k = list(class_names), len(class_names)
    if k in (60, 120) and names == ntu_classes(k):
        return "NTU RGB+D"
    if names == list(UCLA_CLASSES):
        return "NW-UCLA"
    return None
