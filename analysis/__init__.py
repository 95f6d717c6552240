"""Analysis layer (embeddings, projections, metrics, attributions, reports): built on ``stdcl``."""
