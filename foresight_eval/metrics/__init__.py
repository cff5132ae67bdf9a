"""Metrics, one module per family; each registers its metrics in :mod:`.registry` on import."""
