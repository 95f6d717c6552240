"""Loading data pickles (pyskl annotations, NW-UCLA label lists) without running code.

Only plain containers, strings, numbers and numpy arrays are allowed; any other global
referenced by the pickle is refused with a one-line :class:`DataError`.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from stdcl.data.validate import require_file
from stdcl.errors import DataError, first_line

_ALLOWED = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "frozenset"), ("builtins", "str"), ("builtins", "int"), ("builtins", "float"),
    ("builtins", "bool"), ("builtins", "bytes"), ("builtins", "slice"), ("builtins", "complex"),
    ("collections", "OrderedDict"), ("collections", "defaultdict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module == "numpy" and name.endswith("DType")) \
                or module == "numpy.dtypes":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def load_data_pickle(path: str | Path) -> Any:
    """Unpickle a data file that may only hold containers, scalars and numpy arrays."""
    path = require_file(path, "a pickle file")
    try:
        with open(path, "rb") as fh:
            return _Restricted(fh, encoding="latin1").load()
    except OSError as e:
        raise DataError(path, f"cannot read it ({e.strerror or e})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, OverflowError, MemoryError, RecursionError) as e:
        raise DataError(path, f"not a plain data pickle ({type(e).__name__}: {first_line(e)})") from None
