"""vta_core."""
