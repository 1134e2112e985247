"""Partitions: functions from labels to per-client index lists, and their statistics.

Every partitioner returns a list of ``K`` sorted ``int64`` index arrays that together hold every
(selected) index exactly once. :func:`partition_stats` turns such a list into the clients x
classes count table that the figures and chapters show, and :func:`federate` turns a pooled
:class:`~fedlib.data.base.ArrayDataset` plus index lists into a
:class:`~fedlib.data.base.FederatedDataset`.

Protocols (``evaluation.md`` §1):

* global long tail ``n_c = floor(n_max * IF^(-c/(C-1)))`` (Cao et al., NeurIPS 2019; Cui et al.,
  CVPR 2019), then a Dirichlet split (the Fed-LT recipe of CReFF, FedGraB, FedLoGe);
* Dirichlet label skew ``p_c ~ Dir_K(alpha * 1)`` per class, redrawn until every client holds at
  least ``min_size`` samples (Hsu et al., arXiv:1909.06335; NIID-Bench, Li et al., ICDE 2022);
* pathological shards: every client holds exactly ``s`` classes (McMahan et al., AISTATS 2017);
* natural sites: one client per acquisition site.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fedlib._validation import InstanceOf, Interval, Options, check_param
from fedlib.data.base import ArrayDataset, FederatedDataset, dataset_labels, take_rows

__all__ = [
    "check_partition",
    "dirichlet_partition",
    "federate",
    "federate_from_counts",
    "longtail_counts",
    "longtail_subsample",
    "natural_partition",
    "partition_stats",
    "pathological_partition",
    "proportional_test_indices",
    "split_count_table",
    "stratified_split",
]


# --------------------------------------------------------------------------- helpers

_LABELED_DATASET = InstanceOf(Dataset, description="a torch Dataset with 'labels'")


def _as_labels(owner: str, labels, name: str = "labels") -> np.ndarray:
    """Labels as a 1-D int64 array of non-negative class ids (tensor, list or array accepted)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{owner}: {name!r} must be 1-D, got shape {array.shape}.")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{owner}: {name!r} must hold integers, got dtype {array.dtype}.")
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise ValueError(f"{owner}: {name!r} must be >= 0, got a minimum of {array.min()}.")
    return array


def _check_seed(owner: str, seed) -> None:
    check_param(owner, "seed", seed, Interval(int, 0, None, closed="left"))


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


# --------------------------------------------------------------------------- long tail


def longtail_counts(n_max: int, num_classes: int, imbalance_factor: float) -> np.ndarray:
    """Per-class counts of an exponentially long-tailed training set.

    .. math:: n_c = \\lfloor n_{max} \\cdot IF^{-c/(C-1)} \\rfloor, \\quad c = 0, \\dots, C-1,

    with imbalance factor ``IF = n_max / n_min`` (many codes pass ``imb_factor = 1 / IF``).
    Computed as ``int(n_max * (1/IF) ** (c/(C-1)))`` like the LDAM reference code, so the totals
    match the benchmarks: CIFAR-10-LT (5000, 10, IF 100) holds 12,406 images, IF 50 13,996,
    IF 10 20,431; CIFAR-100-LT (500, 100, IF 100) 10,847.

    Parameters
    ----------
    n_max : int >= 1
        Count of the head class ``c = 0``.
    num_classes : int >= 1
        ``C``; with one class the result is ``[n_max]``.
    imbalance_factor : float >= 1
        ``IF``; 1 gives a balanced set.

    Returns
    -------
    ndarray of int64, shape (C,), non-increasing.

    References
    ----------
    Cao et al., "Learning imbalanced datasets with label-distribution-aware margin loss",
    NeurIPS 2019; Cui et al., "Class-balanced loss based on effective number of samples",
    CVPR 2019.

    >>> int(longtail_counts(5000, 10, 100).sum())
    12406
    """
    owner = "longtail_counts"
    check_param(owner, "n_max", n_max, Interval(int, 1, None, closed="left"))
    check_param(owner, "num_classes", num_classes, Interval(int, 1, None, closed="left"))
    check_param(owner, "imbalance_factor", imbalance_factor, Interval(float, 1, None))
    if num_classes == 1:
        return np.array([n_max], dtype=np.int64)
    ratio = 1.0 / float(imbalance_factor)
    return np.array(
        [int(n_max * ratio ** (c / (num_classes - 1.0))) for c in range(num_classes)],
        dtype=np.int64,
    )


def longtail_subsample(
    labels,
    imbalance_factor: float,
    seed: int = 0,
    *,
    n_max: int | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """Indices of a long-tailed subset of a (usually balanced) labelled set.

    Class ``c`` keeps ``n_c`` of its samples (chosen at random with ``seed``), with ``n_c`` from
    :func:`longtail_counts` (class 0 is the head, class ``C-1`` the tail), step (1) of the Fed-LT
    recipe (``evaluation.md`` §1.1).

    Parameters
    ----------
    labels : 1-D int array-like
    imbalance_factor : float >= 1
    seed : int >= 0
    n_max : int, optional
        Head-class count; default: the smallest class count, so that every class can supply
        its share.
    num_classes : int, optional
        Default ``labels.max() + 1``.

    Returns
    -------
    ndarray of int64: sorted indices into ``labels``.
    """
    owner = "longtail_subsample"
    y = _as_labels(owner, labels)
    check_param(owner, "imbalance_factor", imbalance_factor, Interval(float, 1, None))
    _check_seed(owner, seed)
    if y.size == 0:
        raise ValueError(f"{owner}: 'labels' must not be empty.")
    num_classes = _resolve_num_classes(owner, y, num_classes)
    present = np.bincount(y, minlength=num_classes)
    if n_max is None:
        n_max = int(present.min())
        if n_max == 0:
            missing = np.flatnonzero(present == 0).tolist()
            raise ValueError(
                f"{owner}: every class needs samples, but classes {missing} have none; pass "
                "'num_classes' or relabel."
            )
    check_param(owner, "n_max", n_max, Interval(int, 1, None, closed="left"))
    target = longtail_counts(n_max, num_classes, imbalance_factor)
    short = np.flatnonzero(present < target)
    if short.size:
        c = int(short[0])
        raise ValueError(
            f"{owner}: class {c} has {present[c]} samples but the long tail needs {target[c]} "
            f"('n_max'={n_max}); use a smaller 'n_max'."
        )
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y == c))[: target[c]] for c in range(num_classes)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _resolve_num_classes(owner: str, y: np.ndarray, num_classes: int | None) -> int:
    needed = int(y.max()) + 1 if y.size else 0
    if num_classes is None:
        return needed
    check_param(owner, "num_classes", num_classes, Interval(int, 1, None, closed="left"))
    if num_classes < needed:
        raise ValueError(
            f"{owner}: 'num_classes' must be > the largest label ({needed - 1}), "
            f"got {num_classes}."
        )
    return int(num_classes)


# --------------------------------------------------------------------------- Dirichlet


def dirichlet_partition(
    labels,
    num_clients: int,
    alpha: float,
    *,
    min_size: int = 10,
    seed: int = 0,
    self_balancing: bool = False,
    equal_size: bool = False,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Split indices across clients with Dirichlet label skew.

    For every class ``c`` draw client proportions :math:`p_c \\sim \\mathrm{Dir}_K(\\alpha
    \\mathbf{1})`, shuffle class ``c``'s indices and cut them at ``floor(cumsum(p_c) * n_c)``.
    The whole draw is repeated (same random stream, up to ``max_tries`` times) until every
    client holds at least ``min_size`` samples. Smaller ``alpha`` means stronger skew; typical
    values 0.1, 0.3, 0.5, 1.0.

    Parameters
    ----------
    labels : 1-D int array-like, length N
    num_clients : int, 1 <= K <= N
    alpha : float > 0
        Concentration of the symmetric Dirichlet.
    min_size : int >= 0, default 10
        Smallest client size accepted (``K * min_size <= N`` is required).
    seed : int >= 0
        The split is a pure function of ``(labels, K, alpha, options, seed)``.
    self_balancing : bool, default False
        While splitting a class, a client already holding ``>= N / K`` samples gets proportion
        0 (the renormalised NIID-Bench rule), which keeps client sizes closer.
    equal_size : bool, default False
        CReFF's variant: concatenate the Dirichlet clients' indices in client order and cut the
        sequence into ``K`` chunks of (nearly) equal size; sizes then differ by at most one.
    max_tries : int >= 1, default 1000

    Returns
    -------
    list of K sorted int64 arrays; every index ``0..N-1`` appears exactly once.

    Raises
    ------
    ValueError
        Bad parameters, or no draw with every client ``>= min_size`` within ``max_tries``
        (the message suggests a larger ``alpha`` or a smaller ``min_size``).

    References
    ----------
    Hsu, Qi, Brown, "Measuring the effects of non-identical data distribution for federated
    visual classification", arXiv:1909.06335 (2019); Li et al., "Federated learning on non-IID
    data silos: an experimental study", ICDE 2022 (NIID-Bench); Shang et al., "Federated
    learning on heterogeneous and long-tailed data via classifier re-training with federated
    features" (CReFF), IJCAI 2022.
    """
    owner = "dirichlet_partition"
    y = _as_labels(owner, labels)
    check_param(owner, "num_clients", num_clients, Interval(int, 1, None, closed="left"))
    check_param(owner, "alpha", alpha, Interval(float, 0, None, closed="neither"))
    check_param(owner, "min_size", min_size, Interval(int, 0, None, closed="left"))
    _check_seed(owner, seed)
    check_param(owner, "max_tries", max_tries, Interval(int, 1, None, closed="left"))
    for flag_name, flag in (("self_balancing", self_balancing), ("equal_size", equal_size)):
        if not isinstance(flag, bool | np.bool_):
            raise TypeError(f"{owner}: {flag_name!r} must be a bool, got {flag!r}.")
    n = y.size
    if num_clients > n:
        raise ValueError(
            f"{owner}: 'num_clients' ({num_clients}) must not exceed the number of samples ({n})."
        )
    if num_clients * min_size > n:
        raise ValueError(
            f"{owner}: 'min_size' ({min_size}) is impossible: {num_clients} clients x {min_size} "
            f"> {n} samples; use a smaller 'min_size' or fewer clients."
        )

    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    by_class = [np.flatnonzero(y == c) for c in classes]
    smallest = -1
    for _ in range(max_tries):
        parts = _dirichlet_draw(by_class, num_clients, float(alpha), n, self_balancing, rng)
        if equal_size:
            order = np.concatenate(parts)
            parts = np.array_split(order, num_clients)
        smallest = min(len(p) for p in parts)
        if smallest >= min_size:
            return [np.sort(p).astype(np.int64) for p in parts]
    raise ValueError(
        f"{owner}: no split with every client >= 'min_size' ({min_size}) in {max_tries} tries "
        f"(alpha={alpha}, {num_clients} clients, {n} samples; last smallest client: {smallest}). "
        "Use a larger 'alpha', a smaller 'min_size', fewer clients or a larger 'max_tries'."
    )


def _dirichlet_draw(
    by_class: list[np.ndarray],
    num_clients: int,
    alpha: float,
    n: int,
    self_balancing: bool,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients, dtype=np.int64)
    for idx in by_class:
        idx = rng.permutation(idx)
        p = rng.dirichlet(np.full(num_clients, alpha))
        if self_balancing:
            p = p * (sizes < n / num_clients)
            if p.sum() <= 0:  # every client is full (only possible on the last class)
                p = np.full(num_clients, 1.0 / num_clients)
            p = p / p.sum()
        cuts = (np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
        for k, piece in enumerate(np.split(idx, cuts)):
            chunks[k].append(piece)
            sizes[k] += len(piece)
    return [np.concatenate(c) if c else np.zeros(0, np.int64) for c in chunks]


# --------------------------------------------------------------------------- pathological


def pathological_partition(
    labels, num_clients: int, classes_per_client: int, seed: int = 0
) -> list[np.ndarray]:
    """Every client holds exactly ``classes_per_client`` distinct classes (shard split).

    Classes are put in a random order ``pi``; client ``k`` receives classes
    ``pi[(k*s + j) mod C]`` for ``j = 0..s-1`` (distinct because ``s <= C``), so every class is
    held by ``floor(K*s/C)`` or ``ceil(K*s/C)`` clients. Each class's shuffled indices are then
    cut into equal shards, one per holder. Requires ``K * s >= C`` so that every sample is
    assigned, and at least one sample per shard.

    Parameters
    ----------
    labels : 1-D int array-like
    num_clients : int >= 1
    classes_per_client : int in [1, C], C = number of distinct labels
    seed : int >= 0

    Returns
    -------
    list of K sorted int64 arrays; every index appears exactly once.

    References
    ----------
    McMahan et al., "Communication-efficient learning of deep networks from decentralized
    data", AISTATS 2017 (the shard split).
    """
    owner = "pathological_partition"
    y = _as_labels(owner, labels)
    check_param(owner, "num_clients", num_clients, Interval(int, 1, None, closed="left"))
    _check_seed(owner, seed)
    classes = np.unique(y)
    num_classes = classes.size
    if num_classes == 0:
        raise ValueError(f"{owner}: 'labels' must not be empty.")
    check_param(
        owner, "classes_per_client", classes_per_client, Interval(int, 1, num_classes)
    )
    if num_clients > y.size:
        raise ValueError(
            f"{owner}: 'num_clients' ({num_clients}) must not exceed the number of samples "
            f"({y.size})."
        )
    if num_clients * classes_per_client < num_classes:
        raise ValueError(
            f"{owner}: 'num_clients' x 'classes_per_client' ({num_clients} x "
            f"{classes_per_client}) must be >= the number of classes ({num_classes}) so that "
            "every sample is assigned."
        )
    rng = np.random.default_rng(seed)
    order = classes[rng.permutation(num_classes)]
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for k in range(num_clients):
        for j in range(classes_per_client):
            holders[int(order[(k * classes_per_client + j) % num_classes])].append(k)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in classes:
        idx = rng.permutation(np.flatnonzero(y == c))
        owners = holders[int(c)]
        if len(idx) < len(owners):
            raise ValueError(
                f"{owner}: class {int(c)} has {len(idx)} samples for {len(owners)} shards; use "
                "fewer clients or fewer 'classes_per_client'."
            )
        for k, shard in zip(owners, np.array_split(idx, len(owners)), strict=True):
            parts[k].append(shard)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


# --------------------------------------------------------------------------- natural sites


def natural_partition(site_ids) -> list[np.ndarray]:
    """One client per site: client ``k`` holds the indices whose site is the k-th smallest id.

    Parameters
    ----------
    site_ids : 1-D int array-like (e.g. acquisition centre per image)

    Returns
    -------
    list of sorted int64 arrays, one per distinct site id (ascending).
    """
    owner = "natural_partition"
    sites = _as_labels(owner, site_ids, name="site_ids")
    if sites.size == 0:
        raise ValueError(f"{owner}: 'site_ids' must not be empty.")
    return [np.flatnonzero(sites == s).astype(np.int64) for s in np.unique(sites)]


# --------------------------------------------------------------------------- statistics


def partition_stats(
    labels,
    parts: Sequence[np.ndarray],
    num_classes: int | None = None,
    *,
    class_names: Sequence[str] | None = None,
    client_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Class counts per client, a (clients x classes) table.

    ``table.iloc[k, c] = |{i in parts[k] : labels[i] = c}|``; ``table.to_numpy()`` is the
    int64 count matrix that :func:`fedlib.viz.partitions.client_class_heatmap` draws.

    Parameters
    ----------
    labels : 1-D int array-like
    parts : list of index arrays (the output of a partitioner)
    num_classes : int, optional
        Default ``labels.max() + 1``.
    class_names, client_names : sequences of str, optional
        Column and row labels; default the class ids and ``"client k"``.
    """
    owner = "partition_stats"
    y = _as_labels(owner, labels)
    num_classes = _resolve_num_classes(owner, y, num_classes)
    counts = np.zeros((len(parts), num_classes), dtype=np.int64)
    for k, idx in enumerate(parts):
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= y.size):
            raise ValueError(
                f"{owner}: 'parts'[{k}] holds indices outside 0..{y.size - 1}."
            )
        counts[k] = np.bincount(y[idx], minlength=num_classes)
    columns = list(class_names) if class_names is not None else list(range(num_classes))
    if len(columns) != num_classes:
        raise ValueError(
            f"{owner}: 'class_names' has {len(columns)} names for {num_classes} classes."
        )
    if client_names is None:
        client_names = [f"client {k}" for k in range(len(parts))]
    rows = list(client_names)
    if len(rows) != len(parts):
        raise ValueError(f"{owner}: 'client_names' has {len(rows)} names for {len(parts)} clients.")
    return pd.DataFrame(counts, index=rows, columns=columns)


def check_partition(parts: Sequence[np.ndarray], n: int, *, owner: str = "check_partition") -> None:
    """Raise ``ValueError`` unless ``parts`` assigns each index ``0..n-1`` exactly once."""
    if not parts:
        raise ValueError(f"{owner}: 'parts' must hold at least one client.")
    flat = np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in parts])
    if flat.size and (flat.min() < 0 or flat.max() >= n):
        raise ValueError(f"{owner}: 'parts' holds indices outside 0..{n - 1}.")
    counts = np.bincount(flat, minlength=n)
    if (counts > 1).any():
        raise ValueError(
            f"{owner}: index {int(np.flatnonzero(counts > 1)[0])} is assigned to more than one "
            "client."
        )


# --------------------------------------------------------------------------- train/test


def stratified_split(labels, test_frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train and test, class by class.

    Class ``c`` with ``n_c`` samples sends ``round_half_up(test_frac * n_c)`` of them to the test
    split, but never all of them: a present class keeps at least one training sample
    (``n_test = min(round(test_frac * n_c), n_c - 1)``). A class with one sample stays in train.

    Returns
    -------
    (train_idx, test_idx) : sorted int64 arrays.
    """
    owner = "stratified_split"
    y = _as_labels(owner, labels)
    check_param(owner, "test_frac", test_frac, Interval(float, 0, 1, closed="left"))
    _check_seed(owner, seed)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = min(int(_round_half_up(test_frac * idx.size)), idx.size - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    cat = lambda xs: np.sort(np.concatenate(xs)).astype(np.int64) if xs else np.zeros(0, np.int64)  # noqa: E731
    return cat(train), cat(test)


LOCAL_TEST = ("split", "proportional")


def proportional_test_indices(
    train_labels, test_labels, num_classes: int | None = None, seed: int = 0
) -> np.ndarray:
    """Rows of a (balanced) global test set in proportion to one client's training labels.

    With training counts :math:`n_c` and global test counts :math:`m_c`, the client's local test
    set holds :math:`t_c = \\lfloor s \\, n_c \\rfloor` images of class ``c``, with the largest
    scale the global test set can supply, :math:`s = \\min_{c:\\,n_c>0,\\,m_c>0} m_c / n_c`;
    the client's most over-represented class (relative to the test set) uses all its test
    images. Classes the client does not train on get none; classes absent from the global
    test set are skipped. The rows of each class are drawn without replacement with ``seed``.
    This is the ``local_test="proportional"`` protocol of FedLoGe and FedGraB (``evaluation.md``
    §3.4).

    Returns
    -------
    ndarray of int64: sorted indices into ``test_labels``.

    References
    ----------
    Xiao et al., "FedLoGe: Joint local and generic federated learning under long-tailed data",
    ICLR 2024, arXiv:2401.08977; Xiao et al., "FedGraB: Federated long-tailed learning with
    self-adjusting gradient balancer", NeurIPS 2023, arXiv:2311.07844.

    Training counts (6, 3, 0) and a test set of 4 per class: ``s = min(4/6, 4/3)``, so the
    local test set holds (4, 2, 0) images:

    >>> test_labels = np.repeat([0, 1, 2], 4)
    >>> rows = proportional_test_indices([0] * 6 + [1] * 3, test_labels)
    >>> np.bincount(test_labels[rows], minlength=3).tolist()
    [4, 2, 0]
    """
    owner = "proportional_test_indices"
    y_train = _as_labels(owner, train_labels, "train_labels")
    y_test = _as_labels(owner, test_labels, "test_labels")
    _check_seed(owner, seed)
    size = max(int(y_train.max()) + 1 if y_train.size else 0,
               int(y_test.max()) + 1 if y_test.size else 0)
    num_classes = _resolve_num_classes(owner, np.arange(size), num_classes)
    n = np.bincount(y_train, minlength=num_classes)
    m = np.bincount(y_test, minlength=num_classes)
    usable = (n > 0) & (m > 0)
    if not usable.any():
        return np.zeros(0, dtype=np.int64)
    scale = float(np.min(m[usable] / n[usable]))
    target = np.where(usable, np.floor(scale * n + 1e-9), 0).astype(np.int64)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y_test == c))[: target[c]]
              for c in range(num_classes)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def federate(
    dataset: Dataset,
    parts: Sequence[np.ndarray],
    *,
    test: Dataset | None = None,
    test_frac: float = 0.2,
    local_test: str = "split",
    class_names: Sequence[str] | None = None,
    client_names: Sequence[str] | None = None,
    name: str = "federated",
    seed: int = 0,
) -> FederatedDataset:
    """Build a :class:`FederatedDataset` from a pooled dataset and per-client index lists.

    Three test protocols (``evaluation.md`` §1 and §3.4):

    * ``test=None`` (natural sites): each client's rows ``parts[k]`` are split class by class
      into train and test with :func:`stratified_split` (``test_frac``, default 0.2); the pooled
      test set is the union of the client test splits.
    * ``test=<dataset>`` (the Fed-LT recipe): every client trains on all of ``parts[k]`` and
      every client's test split is this one shared (balanced) dataset; it is also stored as
      ``info["global_test"]``, which :meth:`FederatedDataset.pooled_test` returns for
      generalization (``pooled("test")`` would repeat it once per client).
    * ``test=<dataset>, local_test="proportional"`` (FedLoGe, FedGraB): as above, but client
      ``k``'s test split is sampled from ``test`` in proportion to its training labels
      (:func:`proportional_test_indices`, seed ``seed + k``); generalization still uses
      ``test``.

    Parameters
    ----------
    dataset : Dataset with ``labels``
        The pooled data that ``parts`` index into: an :class:`ArrayDataset` (clients get
        in-memory copies) or a lazily decoded one (clients get lazy subsets).
    parts : list of index arrays
        Must not assign an index twice (indices left out are simply unused, e.g. after a
        long-tail subsample).
    test, test_frac : see above (``test_frac`` in [0, 1) is ignored when ``test`` is given).
    local_test : {"split", "proportional"}, default "split"
        "proportional" needs ``test``.
    class_names : sequence of str, optional
        Default ``"class 0"``, ``"class 1"``, ...
    client_names : sequence of str, optional
    name : str
    seed : int >= 0
        Seed of the stratified split (client ``k`` uses ``seed + k``).
    """
    owner = "federate"
    check_param(owner, "dataset", dataset, _LABELED_DATASET)
    check_partition(parts, len(dataset), owner=owner)
    _check_seed(owner, seed)
    check_param(owner, "local_test", local_test, Options(LOCAL_TEST))
    if test is not None:
        check_param(owner, "test", test, _LABELED_DATASET)
    else:
        check_param(owner, "test_frac", test_frac, Interval(float, 0, 1, closed="left"))
        if local_test == "proportional":
            raise ValueError(
                f"{owner}: 'local_test'='proportional' samples each client's test split from a "
                "global test set; pass it as 'test'."
            )
    labels = dataset_labels(dataset)
    test_labels = dataset_labels(test) if test is not None else np.zeros(0, np.int64)
    if class_names is None:
        num_classes = max(int(labels.max()) + 1 if labels.size else 0,
                          int(test_labels.max()) + 1 if test_labels.size else 0)
        class_names = tuple(f"class {c}" for c in range(num_classes))
    train_sets, test_sets = {}, {}
    for k, idx in enumerate(parts):
        idx = np.asarray(idx, dtype=np.int64)
        if test is None:
            tr, te = stratified_split(labels[idx], test_frac, seed + k)
            train_sets[k] = take_rows(dataset, idx[tr])
            test_sets[k] = take_rows(dataset, idx[te])
        elif local_test == "proportional":
            train_sets[k] = take_rows(dataset, idx)
            rows = proportional_test_indices(labels[idx], test_labels, len(class_names), seed + k)
            test_sets[k] = take_rows(test, rows)
        else:
            train_sets[k] = take_rows(dataset, idx)
            test_sets[k] = test
    info: dict = {
        "test_protocol": "per_client_split" if test is None else (
            "proportional" if local_test == "proportional" else "shared"
        )
    }
    if test is None:
        info["test_frac"] = test_frac
    else:
        info["global_test"] = test
    return FederatedDataset(
        name=name,
        train=train_sets,
        test=test_sets,
        class_names=tuple(class_names),
        client_names=tuple(client_names) if client_names is not None else (),
        info=info,
    )


def split_count_table(counts, test_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Split a (clients x classes) count table into train and test tables, cell by cell.

    ``test = min(round_half_up(test_frac * n), n - 1)`` for ``n >= 1`` (the rule of
    :func:`stratified_split`), ``train = n - test``; so ``train + test == counts`` exactly.
    """
    owner = "split_count_table"
    counts = np.asarray(counts)
    if counts.ndim != 2 or not np.issubdtype(counts.dtype, np.integer) or (counts < 0).any():
        raise ValueError(f"{owner}: 'counts' must be a 2-D table of integer counts >= 0.")
    check_param(owner, "test_frac", test_frac, Interval(float, 0, 1, closed="left"))
    counts = counts.astype(np.int64)
    test = np.minimum(_round_half_up(test_frac * counts), np.maximum(counts - 1, 0))
    return counts - test, test


def federate_from_counts(
    render,
    train_counts: np.ndarray,
    test_counts: np.ndarray,
    *,
    class_names: Sequence[str],
    client_names: Sequence[str] | None = None,
    name: str,
    seed: int = 0,
    info: dict | None = None,
) -> FederatedDataset:
    """Render a synthetic :class:`FederatedDataset` whose class counts are given tables.

    Client ``k``'s train (test) split holds exactly ``train_counts[k, c]`` (``test_counts[k,
    c]``) images of class ``c``, in a seeded random order. All images come from one call
    ``render(labels, sites, seed) -> (images, masks, boxes)`` with ``sites`` = the client id, so
    client ``k`` is rendered in site ``k``'s acquisition style.
    """
    train_counts = np.asarray(train_counts, dtype=np.int64)
    test_counts = np.asarray(test_counts, dtype=np.int64)
    if train_counts.shape != test_counts.shape or train_counts.ndim != 2:
        raise ValueError(
            "federate_from_counts: 'train_counts' and 'test_counts' must be 2-D tables of the "
            f"same shape, got {train_counts.shape} and {test_counts.shape}."
        )
    rng = np.random.default_rng(seed)
    num_clients, num_classes = train_counts.shape
    blocks, sites = [], []
    for k in range(num_clients):
        for table in (train_counts, test_counts):
            labels = np.repeat(np.arange(num_classes), table[k])
            blocks.append(rng.permutation(labels))
            sites.append(np.full(labels.size, k, dtype=np.int64))
    all_labels = np.concatenate(blocks).astype(np.int64)
    all_sites = np.concatenate(sites)
    images, masks, boxes = render(all_labels, all_sites, int(rng.integers(2**31)))
    pooled = ArrayDataset(
        torch.as_tensor(images),
        torch.as_tensor(all_labels),
        masks=None if masks is None else torch.as_tensor(masks),
        boxes=None if boxes is None else torch.as_tensor(boxes),
    )
    train_sets, test_sets = {}, {}
    start = 0
    for k in range(num_clients):
        n_train, n_test = int(train_counts[k].sum()), int(test_counts[k].sum())
        train_sets[k] = pooled.subset(np.arange(start, start + n_train))
        test_sets[k] = pooled.subset(np.arange(start + n_train, start + n_train + n_test))
        start += n_train + n_test
    return FederatedDataset(
        name=name,
        train=train_sets,
        test=test_sets,
        class_names=tuple(class_names),
        client_names=tuple(client_names) if client_names is not None else (),
        info=dict(info or {}),
    )
