"""strata's processing layer: plugins, lineage, the Context and the ``strata`` CLI."""

from __future__ import annotations

__all__: list[str] = []
