"""Datasets: synthetic generators, partitions, real-data loaders, one interface."""

from fedlib.data.base import ArrayDataset, FederatedDataset, dataset_labels

__all__ = ["ArrayDataset", "FederatedDataset", "dataset_labels"]
