"""Skeleton encoders (HCN, 2s-AGCN, CTR-GCN, Hyperformer) behind one interface."""

from stdcl.encoders.base import Encoder, Features
from stdcl.encoders.registry import available, build_encoder, register_encoder

__all__ = ["Encoder", "Features", "available", "build_encoder", "register_encoder"]
