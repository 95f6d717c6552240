"""The skeleton data layer: layouts, graphs, readers, transforms, modalities and synthetic data."""

from stdcl.data.base import SampleSource, SkeletonDataset, worker_init_fn
from stdcl.data.layouts import Layout, available_layouts, get_layout, layout_from_mapping, register_layout
from stdcl.data.modalities import MODALITIES, apply_modality
from stdcl.data.registry import DATASETS, available_datasets, open_dataset, open_source

__all__ = ["DATASETS", "MODALITIES", "Layout", "SampleSource", "SkeletonDataset", "apply_modality",
           "available_datasets", "available_layouts", "get_layout", "layout_from_mapping", "open_dataset",
           "open_source", "register_layout", "worker_init_fn"]
