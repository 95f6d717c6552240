"""Skeleton encoders behind one interface, one registry entry each (``available()`` lists them:
HCN, 2s-AGCN, CTR-GCN, Hyperformer, BlockGCN, ProtoGCN)."""

from stdcl.encoders.base import Encoder, Features
from stdcl.encoders.registry import EncoderSpec, available, build_encoder, register_encoder, spec, specs

__all__ = ["Encoder", "EncoderSpec", "Features", "available", "build_encoder", "register_encoder", "spec", "specs"]
