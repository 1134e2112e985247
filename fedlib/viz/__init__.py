"""Plotly figure builders and widget panels used by the chapters."""

from fedlib.viz.gallery import image_gallery_figure

__all__ = ["image_gallery_figure"]
