"""Plotly figure builders and widget panels used by the chapters."""

from fedlib.viz.gallery import image_gallery_figure
from fedlib.viz.genspec import genspec_figure, two_head_figure

__all__ = ["genspec_figure", "image_gallery_figure", "two_head_figure"]
