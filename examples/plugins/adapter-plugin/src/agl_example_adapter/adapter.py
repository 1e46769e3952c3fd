"""The adapter: the spans of one rollout -> how many spans of each name it has."""

from __future__ import annotations

from collections import Counter
from typing import Dict, Sequence

from agentlightning.adapter import TraceAdapter
from agentlightning.types import Span


class SpanCounts(TraceAdapter[Dict[str, int]]):
    """Counts a rollout's spans by name, e.g. ``{"agentlightning.operation": 2, "agentlightning.reward": 1}``.

    ``ignore`` lists span names left out of the counts.
    """

    def __init__(self, ignore: Sequence[str] = ()) -> None:
        self.ignore = frozenset(ignore)

    def adapt(self, source: Sequence[Span], /) -> Dict[str, int]:
        return dict(Counter(span.name for span in source if span.name not in self.ignore))
