"""Real-data loaders for the datasets of the papers, in their native formats.

Each loader returns the same interface as the synthetic generators: datasets that yield
``(image, label)`` and expose ``labels`` (read from CSV files or folder names, never by decoding
images), grouped into a :class:`~fedlib.data.base.FederatedDataset` with client ids 0..K-1.
Images are decoded lazily, one file per ``__getitem__``, with a pixel limit and errors that name
the offending file. Files are fetched and prepared by the scripts in ``data_scripts/``; the data
root is :func:`fedlib.data.root.data_root` (argument > ``FEDLIB_DATA_DIR`` > ``~/.cache/fedlib``).
"""

from fedlib.data.real._io import DEFAULT_MAX_PIXELS, DataFormatError, read_image
from fedlib.data.real.busi import BUSI_CLASSES, busi_dataset, load_busi, paired_folder_dataset
from fedlib.data.real.datasets import ImageFileDataset, federate_by_indices
from fedlib.data.real.ham10000 import HAM10000_CLASSES, HAM10000_SOURCES, load_ham10000
from fedlib.data.real.isic2019 import isic2019_labels, load_isic2019
from fedlib.data.real.medmnist import (
    MEDMNIST_CLASSES,
    federate_medmnist,
    load_medmnist,
    medmnist_class_names,
    medmnist_path,
)
from fedlib.data.real.preprocess import (
    ICH_BRAIN_WINDOW,
    dicom_to_hu,
    read_dicom_windowed,
    resize_shorter_side,
    shades_of_grey,
    window_ct,
)
from fedlib.data.real.rsna_ich import ICH_SUBTYPES, ich_single_label, load_rsna_ich, read_ich_labels
from fedlib.data.real.segmentation import real_segmentation_view
from fedlib.data.real.splits import (
    ClientSplit,
    UnsafePickleError,
    convert_pickled_split,
    load_pickled_split,
    read_client_split,
)
from fedlib.data.root import DATA_DIR_ENV, data_root

__all__ = [
    "BUSI_CLASSES",
    "DATA_DIR_ENV",
    "DEFAULT_MAX_PIXELS",
    "HAM10000_CLASSES",
    "HAM10000_SOURCES",
    "ICH_BRAIN_WINDOW",
    "ICH_SUBTYPES",
    "MEDMNIST_CLASSES",
    "ClientSplit",
    "DataFormatError",
    "ImageFileDataset",
    "UnsafePickleError",
    "busi_dataset",
    "convert_pickled_split",
    "data_root",
    "dicom_to_hu",
    "federate_by_indices",
    "federate_medmnist",
    "ich_single_label",
    "isic2019_labels",
    "load_busi",
    "load_ham10000",
    "load_isic2019",
    "load_medmnist",
    "load_pickled_split",
    "load_rsna_ich",
    "medmnist_class_names",
    "medmnist_path",
    "paired_folder_dataset",
    "read_client_split",
    "read_dicom_windowed",
    "read_ich_labels",
    "read_image",
    "real_segmentation_view",
    "resize_shorter_side",
    "shades_of_grey",
    "window_ct",
]
