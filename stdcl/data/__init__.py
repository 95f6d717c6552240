"""The skeleton data layer: layouts, graphs, readers, transforms, modalities and synthetic data.

Names are imported lazily (PEP 562), so light users such as the raw-NTU preparation
workers do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SampleSource": "stdcl.data.base", "SkeletonDataset": "stdcl.data.base", "worker_init_fn": "stdcl.data.base",
    "Layout": "stdcl.data.layouts", "available_layouts": "stdcl.data.layouts", "get_layout": "stdcl.data.layouts",
    "layout_from_mapping": "stdcl.data.layouts", "register_layout": "stdcl.data.layouts",
    "MODALITIES": "stdcl.data.modalities", "apply_modality": "stdcl.data.modalities",
    "DATASETS": "stdcl.data.registry", "available_datasets": "stdcl.data.registry",
    "open_dataset": "stdcl.data.registry", "open_source": "stdcl.data.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stdcl.data' has no attribute {name!r}")
