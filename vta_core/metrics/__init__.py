"""The paper's evaluation metrics (one module each; heavy dependencies are imported lazily)."""

from vta_core.metrics.result import MetricResult

__all__ = ["MetricResult"]
