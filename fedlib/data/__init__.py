"""Datasets: synthetic generators, partitions, real-data loaders, one interface.

Every source yields a :class:`FederatedDataset`; :func:`load_dataset` builds one by name.
"""

from fedlib.data.arrays import from_arrays, load_npz
from fedlib.data.base import ArrayDataset, FederatedDataset, dataset_labels
from fedlib.data.partitions import (
    dirichlet_partition,
    federate,
    longtail_counts,
    longtail_subsample,
    natural_partition,
    partition_stats,
    pathological_partition,
)
from fedlib.data.registry import DATASETS, load_dataset
from fedlib.data.root import data_root
from fedlib.data.segmentation import SegmentationDataset, segmentation_view
from fedlib.data.synthbus import render_synthbus, synthbus
from fedlib.data.synthderm import render_synthderm, synthderm
from fedlib.data.synthich import render_synthich, synthich
from fedlib.data.templates import scale_template, site_template

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "FederatedDataset",
    "SegmentationDataset",
    "data_root",
    "dataset_labels",
    "dirichlet_partition",
    "federate",
    "from_arrays",
    "load_dataset",
    "load_npz",
    "longtail_counts",
    "longtail_subsample",
    "natural_partition",
    "partition_stats",
    "pathological_partition",
    "render_synthbus",
    "render_synthderm",
    "render_synthich",
    "scale_template",
    "segmentation_view",
    "site_template",
    "synthbus",
    "synthderm",
    "synthich",
]
