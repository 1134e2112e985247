"""Download BUSI (breast ultrasound images with lesion masks) and check its layout.

Usage::

    python data_scripts/busi.py [--root DIR]

Dataset: Al-Dhabyani, Gomaa, Khaled & Fahmy, "Dataset of breast ultrasound images", Data in
Brief 28, 104863 (2020), doi:10.1016/j.dib.2019.104863; page
https://scholar.cu.edu.eg/?q=afahmy/pages/dataset (see it for the terms of use). The
archive ``Dataset_BUSI.zip`` (about 200 MB) unpacks to ``Dataset_BUSI_with_GT/`` with
``benign/`` (437), ``malignant/`` (210) and ``normal/`` (133) images and their masks.
No checksum is published (``None`` below); the script prints the SHA-256 it received and checks
the folder layout by loading it with ``fedlib.data.real.busi_dataset``.
"""

from __future__ import annotations

import argparse
import sys

import _download as dl

from fedlib.data.real.busi import BUSI_CLASSES, busi_dataset
from fedlib.data.root import data_root

BUSI_URL = "https://scholar.cu.edu.eg/Dataset_BUSI.zip"
BUSI_MD5 = None  # not published by the dataset authors


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dl.add_common_arguments(parser)
    parser.add_argument("--keep-zip", action="store_true", help="keep the zip after unzipping")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = data_root(args.root) / "busi"
    target = folder / "Dataset_BUSI_with_GT"
    try:
        if not target.is_dir():
            zip_was_there = (folder / "Dataset_BUSI.zip").is_file()
            zip_path = dl.download(BUSI_URL, folder / "Dataset_BUSI.zip", md5=BUSI_MD5,
                                   timeout=args.timeout, progress=not args.no_progress)
            dl.extract_zip(zip_path, target)
            if not args.keep_zip and not zip_was_there:
                zip_path.unlink()  # downloaded by this run; a zip the user put there is kept
        data = busi_dataset(dataset_dir=target, image_size=None)
    except dl.DownloadError as error:
        return dl.fail(str(error))
    except (OSError, ValueError) as error:
        return dl.fail(str(error))
    counts = data.labels.bincount(minlength=len(BUSI_CLASSES)).tolist()
    print(f"{target}: " + ", ".join(f"{c} {n}" for c, n in zip(BUSI_CLASSES, counts,
                                                                   strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
