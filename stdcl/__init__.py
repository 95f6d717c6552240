"""STD-CL: spatial-temporal decoupling contrastive learning for skeleton action recognition."""

__version__ = "0.1.0"
