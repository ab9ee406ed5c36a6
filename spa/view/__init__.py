"""The HTML view of a model's coupled groups (`spa analyze --html`) and of a prune
(`spa prune --report`): one self-contained page, its graph laid out in Python."""

from .html import page, view_data, write
from .layout import layout, node_graph

__all__ = ["page", "view_data", "write", "layout", "node_graph"]
