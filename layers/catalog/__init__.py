"""The layer catalogue: one file per family of layer types."""
