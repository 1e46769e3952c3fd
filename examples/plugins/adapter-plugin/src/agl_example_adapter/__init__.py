"""An example Agent Lightning adapter plugin: ``Trainer(adapter="span-counts")``."""

from .adapter import SpanCounts

__all__ = ["SpanCounts"]
