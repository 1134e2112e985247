"""Datasets by name, with a partition chosen on top of their natural sites.

``load_dataset("synthderm")`` gives SynthDerm's six ISIC-2019-like sites;
``load_dataset("synthderm", partition="dirichlet", num_clients=10, alpha=0.5,
imbalance_factor=50)`` pools the sites' data, applies a global long tail and a Dirichlet label
skew, and gives each client a stratified 80/20 train/test split of its share.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlib._validation import NONE, AnyOf, Interval, Options, validate_params
from fedlib.data.base import ArrayDataset, FederatedDataset


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset builder (``"module:function"``, imported on use)."""

    builder: str
    summary: str
    synthetic: bool = True

    def load(self, **options: Any) -> FederatedDataset:
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)(**options)


DATASETS: dict[str, DatasetEntry] = {
    "synthderm": DatasetEntry(
        "fedlib.data.synthderm:synthderm",
        "dermoscopy-like RGB images, 8 ISIC-2019 classes, 6 sites with the ISIC-2019 centre "
        "mix (embedded, default)",
    ),
    "synthich": DatasetEntry(
        "fedlib.data.synthich:synthich",
        "CT-like head slices, 5 haemorrhage subtypes, the 10-client RSNA-ICH mix (embedded)",
    ),
    "synthbus": DatasetEntry(
        "fedlib.data.synthbus:synthbus",
        "breast-ultrasound-like images, benign/malignant, 3 sites (embedded)",
    ),
    "isic2019": DatasetEntry(
        "fedlib.data.real.isic2019:load_isic2019",
        "ISIC-2019 dermoscopy, 8 classes, the 6 FLamby centres (real; data_scripts/isic2019.py)",
        synthetic=False,
    ),
    "rsna_ich": DatasetEntry(
        "fedlib.data.real.rsna_ich:load_rsna_ich",
        "RSNA intracranial haemorrhage, single-label slices, the authors' client split (real; "
        "data_scripts/rsna_ich.py)",
        synthetic=False,
    ),
}

PARTITIONS = ("sites", "dirichlet", "pathological")

_CONSTRAINTS = {
    "name": Options(tuple(DATASETS)),
    "partition": Options(PARTITIONS),
    "num_clients": AnyOf(NONE, Interval(int, 1, None)),
    "alpha": Interval(float, 0, None, closed="neither"),
    "imbalance_factor": AnyOf(NONE, Interval(float, 1, None)),
    "classes_per_client": Interval(int, 1, None),
    "min_size": Interval(int, 0, None),
    "seed": Interval(int, 0, None),
    "test_frac": Interval(float, 0, 1, closed="neither"),
}


def load_dataset(
    name: str,
    *,
    partition: str = "sites",
    num_clients: int | None = None,
    alpha: float = 0.5,
    imbalance_factor: float | None = None,
    classes_per_client: int = 2,
    min_size: int = 10,
    seed: int = 0,
    test_frac: float = 0.2,
    root: str | None = None,
    **options: Any,
) -> FederatedDataset:
    """Build a dataset by name and partition it.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    partition : {"sites", "dirichlet", "pathological"}, default "sites"
        "sites" keeps the dataset's natural clients. The others pool all its images (train and
        test), optionally subsample a global long tail (``imbalance_factor``; class 0 is the
        head and class ``C-1`` the tail, with the largest head the pool can supply, see
        :func:`largest_longtail_head`), split the pool
        across ``num_clients`` with :func:`~fedlib.data.partitions.dirichlet_partition`
        (``alpha``, ``min_size``) or :func:`~fedlib.data.partitions.pathological_partition`
        (``classes_per_client``), and give each client a stratified train/test split
        (``test_frac``).
    seed : int
        Seeds the generator and the partition.
    root : str, optional
        Data root of real datasets (unused by the synthetic ones).
    **options
        Passed to the dataset builder (e.g. ``scale``, ``image_size``, ``difficulty``).
    """
    validate_params(
        "load_dataset",
        dict(
            name=name,
            partition=partition,
            num_clients=num_clients,
            alpha=alpha,
            imbalance_factor=imbalance_factor,
            classes_per_client=classes_per_client,
            min_size=min_size,
            seed=seed,
            test_frac=test_frac,
        ),
        _CONSTRAINTS,
    )
    entry = DATASETS[name]
    if entry.synthetic:
        options["seed"] = seed
    else:
        options["root"] = root
    try:
        natural = entry.load(**options)
    except TypeError as exc:
        raise TypeError(f"load_dataset: dataset {name!r} rejected its options: {exc}") from exc
    if partition == "sites":
        if num_clients is not None and num_clients != natural.num_clients:
            raise ValueError(
                f"load_dataset: partition 'sites' has {natural.num_clients} clients for "
                f"{name!r}; got num_clients={num_clients}. Use partition='dirichlet' to choose "
                "the number of clients."
            )
        if imbalance_factor is not None:
            raise ValueError(
                "load_dataset: 'imbalance_factor' applies to a 'dirichlet' or 'pathological' "
                "partition, not to the natural 'sites'."
            )
        return natural
    return _repartition(
        natural,
        partition,
        num_clients or 10,
        alpha,
        imbalance_factor,
        classes_per_client,
        min_size,
        seed,
        test_frac,
    )


def largest_longtail_head(labels: np.ndarray, num_classes: int, imbalance_factor: float) -> int:
    """The largest head count ``n_max`` whose long tail the pool can supply.

    Class ``c`` needs ``floor(n_max * IF^(-c/(C-1)))`` images, so ``n_max`` is at most
    ``floor(count_c * IF^(c/(C-1)))`` for every class (class 0 is the head, ``C-1`` the tail).
    On an already imbalanced pool (SynthDerm's sites) this keeps far more images than a head
    equal to the smallest class would.
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    exponents = np.arange(num_classes) / max(num_classes - 1, 1)
    head = int(np.floor(counts * float(imbalance_factor) ** exponents + 1e-9).min())
    if head < 1:
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(
            f"load_dataset: a long tail needs images of every class; classes {missing} have none."
        )
    return head


def _repartition(
    natural: FederatedDataset,
    partition: str,
    num_clients: int,
    alpha: float,
    imbalance_factor: float | None,
    classes_per_client: int,
    min_size: int,
    seed: int,
    test_frac: float,
) -> FederatedDataset:
    from fedlib.data.partitions import (
        dirichlet_partition,
        federate,
        longtail_subsample,
        pathological_partition,
    )

    parts_all = [natural.pooled("train"), natural.pooled("test")]
    if not all(isinstance(p, ArrayDataset) for p in parts_all):
        raise ValueError("load_dataset: re-partitioning needs an in-memory (synthetic) dataset.")
    pool = ArrayDataset.concatenate(parts_all)  # type: ignore[arg-type]
    labels = pool.labels.numpy()
    keep = np.arange(len(labels))
    if imbalance_factor is not None:
        head = largest_longtail_head(labels, natural.num_classes, imbalance_factor)
        keep = longtail_subsample(
            labels, imbalance_factor, seed=seed, n_max=head, num_classes=natural.num_classes
        )
    if len(keep) < num_clients:
        raise ValueError(
            f"load_dataset: 'num_clients'={num_clients} is more than the {len(keep)} samples "
            "available."
        )
    if partition == "dirichlet":
        local = dirichlet_partition(labels[keep], num_clients, alpha, min_size=min_size, seed=seed)
    else:
        local = pathological_partition(labels[keep], num_clients, classes_per_client, seed=seed)
    parts = [keep[idx] for idx in local]
    data = federate(
        pool,
        parts,
        test_frac=test_frac,
        class_names=natural.class_names,
        name=f"{natural.name} ({partition})",
        seed=seed,
    )
    data.info.update({k: v for k, v in natural.info.items() if k not in data.info})
    data.info.update(partition=partition, alpha=alpha, imbalance_factor=imbalance_factor)
    return data
