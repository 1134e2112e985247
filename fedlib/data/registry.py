"""Datasets by name, with a partition chosen on top of their natural sites.

``load_dataset("synthderm")`` gives SynthDerm's six ISIC-2019-like sites;
``load_dataset("synthderm", partition="dirichlet", num_clients=10, alpha=0.5,
imbalance_factor=50)`` pools the sites' data, applies a global long tail and a Dirichlet label
skew, and gives each client a stratified 80/20 train/test split of its share.

Names: a key of :data:`DATASETS`, ``"medmnist:<name>"`` (e.g. ``"medmnist:dermamnist"``), or
the path of a ``.npz`` file in the format of :mod:`fedlib.data.arrays` (your own data).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedlib._validation import NONE, AnyOf, Interval, Options, validate_params
from fedlib.data.base import FederatedDataset, concat_datasets, dataset_labels, take_rows


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset builder (``"module:function"``, imported on use).

    ``task`` is what the dataset is for ("classification" or "segmentation": the CLI picks the
    methods, model and metrics from it); ``fixed`` are builder arguments the name implies.
    """

    builder: str
    summary: str
    synthetic: bool = True
    task: str = "classification"
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def load(self, **options: Any) -> FederatedDataset:
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)(**self.fixed, **options)


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
    "synthbus_seg": DatasetEntry(
        "fedlib.data.segmentation:segmentation_view",
        "segmentation: SynthBUS lesion masks at 3 sites with mixed supervision (FedMix: pixel, "
        "box, image labels; --data-option supervision=fedmix|full|pixel_only) (embedded)",
        task="segmentation",
        fixed={"dataset_name": "synthbus"},
    ),
    "synthderm_seg": DatasetEntry(
        "fedlib.data.segmentation:segmentation_view",
        "segmentation: SynthDerm lesion masks at the 4 HAM10000 sources with mixed supervision "
        "(--data-option supervision=...) (embedded)",
        task="segmentation",
        fixed={"dataset_name": "synthderm"},
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
    "ham10000": DatasetEntry(
        "fedlib.data.real.ham10000:load_ham10000",
        "HAM10000 dermoscopy, 7 classes, its 4 acquisition sources as clients (real; "
        "data_scripts/ham10000.py)",
        synthetic=False,
    ),
    "busi": DatasetEntry(
        "fedlib.data.real.busi:load_busi",
        "BUSI breast ultrasound, benign/malignant, one site: use --partition dirichlet to "
        "federate it (real; data_scripts/busi.py)",
        synthetic=False,
    ),
    "ham10000_seg": DatasetEntry(
        "fedlib.data.real.segmentation:real_segmentation_view",
        "segmentation: HAM10000 lesion masks, its 4 sources in FedMix's order with mixed "
        "supervision (--data-option supervision=fedmix|full|pixel_only) (real; "
        "data_scripts/ham10000.py)",
        synthetic=False,
        task="segmentation",
        fixed={"name": "ham10000"},
    ),
    "busi_seg": DatasetEntry(
        "fedlib.data.real.segmentation:real_segmentation_view",
        "segmentation: BUSI lesion masks, one site split into busi_clients=3 clients by class, "
        "mixed supervision (--data-option supervision=...) (real; data_scripts/busi.py)",
        synthetic=False,
        task="segmentation",
        fixed={"name": "busi"},
    ),
    "medmnist": DatasetEntry(
        "fedlib.data.real.medmnist:medmnist_dataset",
        "MedMNIST 2-D datasets as medmnist:<name>, e.g. medmnist:dermamnist; one client: use "
        "--partition dirichlet (real; data_scripts/medmnist.py)",
        synthetic=False,
    ),
}

PARTITIONS = ("sites", "dirichlet", "pathological")
LOCAL_TEST = ("split", "proportional")

_CONSTRAINTS = {
    "partition": Options(PARTITIONS),
    "local_test": Options(LOCAL_TEST),
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
    local_test: str = "split",
    root: str | None = None,
    **options: Any,
) -> FederatedDataset:
    """Build a dataset by name and partition it.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`, ``"medmnist:<name>"``, or the path of a ``.npz`` file
        (:func:`fedlib.data.arrays.load_npz`).
    partition : {"sites", "dirichlet", "pathological"}, default "sites"
        "sites" keeps the dataset's natural clients. The others pool all its images (train and
        test), optionally subsample a global long tail (``imbalance_factor``; class 0 is the
        head and class ``C-1`` the tail, with the largest head the pool can supply, see
        :func:`largest_longtail_head`), split the pool
        across ``num_clients`` with :func:`~fedlib.data.partitions.dirichlet_partition`
        (``alpha``, ``min_size``) or :func:`~fedlib.data.partitions.pathological_partition`
        (``classes_per_client``), and give each client a stratified train/test split
        (``test_frac``). Real (lazily decoded) datasets are pooled and re-split the same way,
        by their labels, without decoding an image.
    local_test : {"split", "proportional"}, default "split"
        "proportional" (FedLoGe/FedGraB): a re-partition first sets aside a balanced global
        test set (``round(test_frac * n_min)`` images of every class, ``n_min`` the smallest
        class of the pool), the clients train on all of their share, and each client's test
        split is sampled from the global set in proportion to its training labels
        (:func:`~fedlib.data.partitions.proportional_test_indices`). With ``"sites"`` it needs
        a dataset whose clients share one test set (a ``.npz`` without ``client_test``).
        Generalization uses the global set (:meth:`FederatedDataset.pooled_test`).
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
            local_test=local_test,
        ),
        _CONSTRAINTS,
    )
    entry, options = _resolve(name, options)
    if entry is None:
        natural = _load_npz(name, options)
    else:
        if entry.synthetic:
            options["seed"] = seed
        else:
            options["root"] = root
        try:
            natural = entry.load(**options)
        except TypeError as exc:
            raise TypeError(f"load_dataset: dataset {name!r} rejected its options: {exc}") from exc
    if entry is not None and entry.task == "segmentation" and (
        partition != "sites" or local_test != "split"
    ):
        raise ValueError(
            f"load_dataset: {name!r} is a segmentation federation with fixed clients and "
            f"supervision levels; use partition='sites' and local_test='split', got "
            f"partition={partition!r}, local_test={local_test!r}."
        )
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
        if local_test == "proportional":
            return _proportional_sites(natural, seed)
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
        local_test,
    )


def task_of(name: str) -> str:
    """ "classification" or "segmentation": what dataset ``name`` is for (``.npz`` files and
    ``medmnist:<name>`` are classification)."""
    return DATASETS[name].task if name in DATASETS else "classification"


def dataset_names() -> list[str]:
    """Every name :func:`load_dataset` accepts, with ``medmnist:<name>`` spelled out."""
    from fedlib.data.real.medmnist import MEDMNIST_CLASSES

    names = [n for n in DATASETS if n != "medmnist"]
    return names + [f"medmnist:{m}" for m in sorted(MEDMNIST_CLASSES)]


def _is_npz(name: str) -> bool:
    return name.lower().endswith(".npz") or os.sep in name or "/" in name


def _resolve(name: Any, options: dict[str, Any]) -> tuple[DatasetEntry | None, dict[str, Any]]:
    """The registry entry of ``name`` (None for a .npz path) and its builder options."""
    if isinstance(name, str) and _is_npz(name):
        return None, options
    if isinstance(name, str) and name.startswith("medmnist:"):
        from fedlib.data.real.medmnist import MEDMNIST_CLASSES

        sub = name.split(":", 1)[1]
        if sub not in MEDMNIST_CLASSES:
            raise ValueError(
                f"load_dataset: unknown MedMNIST dataset {sub!r}; valid names: "
                f"{', '.join(sorted(MEDMNIST_CLASSES))} (as medmnist:<name>)."
            )
        return DATASETS["medmnist"], {**options, "name": sub}
    if name == "medmnist":
        raise ValueError(
            "load_dataset: name a MedMNIST dataset as medmnist:<name>, e.g. medmnist:dermamnist."
        )
    if not isinstance(name, str) or name not in DATASETS:
        valid = ", ".join(repr(n) for n in DATASETS if n != "medmnist")
        raise ValueError(
            f"load_dataset: 'name' must be one of {valid}, 'medmnist:<name>' or the path of a "
            f".npz file, got {name!r}."
        )
    return DATASETS[name], options


def _load_npz(path: str, options: dict[str, Any]) -> FederatedDataset:
    from fedlib.data.arrays import load_npz

    unknown = sorted(set(options) - {"client_names", "name"})
    if unknown:
        raise TypeError(
            f"load_dataset: a .npz file takes no option(s) {', '.join(map(repr, unknown))}."
        )
    return load_npz(path, **options)


def _proportional_sites(natural: FederatedDataset, seed: int) -> FederatedDataset:
    """Natural clients whose test splits are re-drawn from their shared global test set."""
    from fedlib.data.partitions import proportional_test_indices

    shared = natural.info.get("global_test")
    if shared is None:
        raise ValueError(
            f"load_dataset: 'local_test'='proportional' with partition 'sites' needs clients that "
            f"share one global test set; {natural.name!r} has its own test split per client. "
            "Use partition='dirichlet' (a balanced global test set is then set aside)."
        )
    test_labels = dataset_labels(shared)
    test = {
        k: take_rows(shared, proportional_test_indices(
            natural.labels(k), test_labels, natural.num_classes, seed + k))
        for k in natural.client_ids()
    }
    info = {**natural.info, "test_protocol": "proportional"}
    return FederatedDataset(natural.name, dict(natural.train), test, natural.class_names,
                            natural.client_names, info)


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


def _balanced_test_rows(labels: np.ndarray, test_frac: float, seed: int) -> np.ndarray:
    """``round(test_frac * n_min)`` rows of every present class (at least 1, at most n_min - 1)."""
    counts = np.bincount(labels)
    present = np.flatnonzero(counts > 0)
    n_min = int(counts[present].min())
    per_class = min(max(int(np.floor(test_frac * n_min + 0.5)), 1), n_min - 1)
    if per_class < 1:
        raise ValueError(
            f"load_dataset: a balanced global test set needs 2 images of every class; class "
            f"{int(present[np.argmin(counts[present])])} has {n_min}."
        )
    rng = np.random.default_rng([seed, 1])
    rows = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in present]
    return np.sort(np.concatenate(rows))


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
    local_test: str = "split",
) -> FederatedDataset:
    from fedlib.data.partitions import (
        dirichlet_partition,
        federate,
        longtail_subsample,
        pathological_partition,
    )

    # pool every distinct image once (a test set that all clients share counts once)
    pool = concat_datasets([natural.pooled("train"), natural.pooled_test()])
    labels = dataset_labels(pool)
    candidates = np.arange(len(labels))
    global_test = None
    if local_test == "proportional":
        test_rows = _balanced_test_rows(labels, test_frac, seed)
        global_test = take_rows(pool, test_rows)
        candidates = np.setdiff1d(candidates, test_rows)
    keep = candidates
    if imbalance_factor is not None:
        head = largest_longtail_head(labels[candidates], natural.num_classes, imbalance_factor)
        keep = candidates[longtail_subsample(
            labels[candidates], imbalance_factor, seed=seed, n_max=head,
            num_classes=natural.num_classes,
        )]
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
        test=global_test,
        test_frac=test_frac,
        local_test=local_test,
        class_names=natural.class_names,
        name=f"{natural.name} ({partition})",
        seed=seed,
    )
    inherited = {k: v for k, v in natural.info.items() if k not in ("global_test", "test_frac")}
    data.info.update({k: v for k, v in inherited.items() if k not in data.info})
    data.info.update(partition=partition, alpha=alpha, imbalance_factor=imbalance_factor)
    return data
