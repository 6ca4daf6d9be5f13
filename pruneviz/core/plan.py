"""The pruning plan: what to prune, how much, by which criterion. Immutable; the session's history is a list of plans."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import PrunevizError

#: ``layer``: each tensor has its own sparsity; ``global``: one threshold over all tensors;
#: ``structured``: each tensor has a ratio of whole output channels removed.
SCOPES: tuple[str, ...] = ("layer", "global", "structured")


@dataclass(frozen=True)
class Plan:
    """Criterion, scope, per-layer sparsities (layer/structured scope) and the global sparsity (global scope)."""

    criterion: str = "magnitude"
    scope: str = "layer"
    sparsity: Mapping[str, float] = field(default_factory=dict)
    global_sparsity: float = 0.0

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise PrunevizError(f"unknown scope {self.scope!r}; choose one of {', '.join(SCOPES)}.")
        object.__setattr__(self, "sparsity", dict(self.sparsity))

    def with_(self, **changes: Any) -> Plan:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "scope": self.scope,
            "sparsity": dict(self.sparsity),
            "global_sparsity": self.global_sparsity,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        return cls(
            criterion=str(d.get("criterion", "magnitude")),
            scope=str(d.get("scope", "layer")),
            sparsity={str(k): float(v) for k, v in dict(d.get("sparsity", {})).items()},
            global_sparsity=float(d.get("global_sparsity", 0.0)),
        )
