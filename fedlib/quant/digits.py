"""scikit-learn's handwritten digits as a small real image dataset for quick CPU experiments."""

from __future__ import annotations

import numpy as np
import torch

from fedlib._validation import Interval, check_param
from fedlib.data.base import ArrayDataset

__all__ = ["digits_split"]


def digits_split(
    test_fraction: float = 0.25, seed: int = 0
) -> tuple[ArrayDataset, ArrayDataset, tuple[str, ...]]:
    """scikit-learn's digits (1,797 grayscale 8x8 images, 10 classes; UCI optical recognition
    of handwritten digits), split into stratified train and test sets.

    Pixels (0..16) are scaled to [0, 1] as every fedlib model expects; images have shape
    (N, 1, 8, 8). Ships with scikit-learn, so no download.

    Returns
    -------
    train, test : ArrayDataset
    class_names : tuple of str
        ``("0", ..., "9")``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_param("digits_split", "test_fraction", test_fraction,
                Interval(float, 0, 1, closed="neither"))
    check_param("digits_split", "seed", seed, Interval(int, 0, None))
    bunch = load_digits()
    images = torch.as_tensor(bunch.images[:, None] / 16.0, dtype=torch.float32)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(index, test_size=test_fraction, random_state=seed,
                                           stratify=bunch.target)
    train = ArrayDataset(images[np.sort(train_idx)], labels[np.sort(train_idx)])
    test = ArrayDataset(images[np.sort(test_idx)], labels[np.sort(test_idx)])
    return train, test, tuple(str(c) for c in bunch.target_names)
