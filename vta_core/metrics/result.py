"""The result every metric returns: a number, or None with the reason it could not be computed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricResult:
    """``value`` is None exactly when ``reason`` says why (missing weights, too few clips, ...)."""

    name: str
    value: float | None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.value is None) == (self.reason is None):
            raise ValueError(f"metric {self.name}: give a value or a reason, not both or neither")

    @classmethod
    def unavailable(cls, name: str, reason: str, **extra: Any) -> MetricResult:
        return cls(name=name, value=None, reason=reason, extra=dict(extra))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "reason": self.reason, **({"extra": self.extra} if self.extra else {})}
