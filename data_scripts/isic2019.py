"""Download ISIC-2019 and prepare it as FLamby's Fed-ISIC2019 (six centres).

Usage::

    python data_scripts/isic2019.py [--root DIR] [--workers 4] [--skip-download]

Steps (files under ``<root>/isic2019``):

1. download from the ISIC challenge archive (the S3 URLs FLamby's ``download_isic.py`` uses)
   ``ISIC_2019_Training_Input.zip`` (about 9 GB) and ``ISIC_2019_Training_GroundTruth.csv``,
   and FLamby's centre split ``train_test_split`` (pinned to a FLamby commit);
2. unzip the images;
3. preprocess the 23,247 images of the split as FLamby does: shorter side to 224 px (bilinear),
   Shades-of-Grey colour constancy with power 6, saved as JPEG (Pillow's default quality 75)
   to ``ISIC_2019_Training_Input_preprocessed/``; each file is written atomically and existing
   ones are skipped, so an interrupted run resumes;
4. load the result with ``fedlib.data.real.load_isic2019`` and print the per-centre counts.

Checksums: the ISIC archive and FLamby publish none, so none are verified (``None`` below); the
script prints each file's SHA-256 and checks the split file's structure (23,247 rows, 6 centres).
Licence: CC BY-NC 4.0 (ISIC 2019); cite Combalia et al. arXiv:1908.02288, Tschandl et al. 2018,
Codella et al. arXiv:1710.05006, and FLamby (arXiv:2210.04620).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import _download as dl
import numpy as np
from PIL import Image

from fedlib.data.real._io import atomic_save_image, read_csv_columns, read_image
from fedlib.data.real.isic2019 import load_isic2019
from fedlib.data.real.preprocess import resize_shorter_side, shades_of_grey
from fedlib.data.root import data_root

ISIC_URL = "https://isic-challenge-data.s3.amazonaws.com/2019/{filename}"
FLAMBY_SPLIT_URL = (
    "https://raw.githubusercontent.com/owkin/FLamby/ed9c943f19236ec4dedb4a3bee30d9316d08e395/"
    "flamby/datasets/fed_isic2019/dataset_creation_scripts/train_test_split"
)
FILES = {
    # filename: (url, md5) -- no checksum is published for these files.
    "ISIC_2019_Training_GroundTruth.csv": (
        ISIC_URL.format(filename="ISIC_2019_Training_GroundTruth.csv"), None),
    "train_test_split": (FLAMBY_SPLIT_URL, None),
    "ISIC_2019_Training_Input.zip": (ISIC_URL.format(filename="ISIC_2019_Training_Input.zip"),
                                     None),
}
EXPECTED_SPLIT_ROWS = 23247
PREPROCESSED = "ISIC_2019_Training_Input_preprocessed"


def preprocess_image(source: Path, target: Path, size: int = 224, power: float = 6.0) -> None:
    """FLamby's ISIC preprocessing of one image, written atomically to ``target``."""
    image = resize_shorter_side(read_image(source).convert("RGB"), size)
    corrected = shades_of_grey(np.asarray(image), power=power)
    atomic_save_image(Image.fromarray(corrected), target)


def _preprocess_pair(pair: tuple[Path, Path]) -> None:
    preprocess_image(*pair)


def check_split(path: Path) -> None:
    """Check FLamby's split by content (no checksum is published); a bad file is moved aside
    (never deleted: it may be the user's own), so the next run fetches a fresh one."""
    try:
        split = read_csv_columns(path, ("image", "center", "fold"), what="FLamby split file")
        centres = sorted(int(c) for c in set(split["center"]))
        if len(split) != EXPECTED_SPLIT_ROWS or centres != list(range(6)):
            raise ValueError(f"{path}: expected {EXPECTED_SPLIT_ROWS} rows and centres 0..5, "
                             f"found {len(split)} rows and centres {centres}.")
    except ValueError as error:
        if path.is_file():
            aside = dl.move_aside(path, "not FLamby's split file")
            raise ValueError(f"{error} It was moved aside to {aside}.") from error
        raise


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dl.add_common_arguments(parser)
    parser.add_argument("--workers", type=int, default=1, help="processes for preprocessing")
    parser.add_argument("--size", type=int, default=224, help="shorter side after resizing")
    parser.add_argument("--skip-download", action="store_true",
                        help="only unzip and preprocess files already in the folder")
    parser.add_argument("--keep-zip", action="store_true", help="keep the zip after unzipping")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = data_root(args.root) / "isic2019"
    folder.mkdir(parents=True, exist_ok=True)
    raw_dir = folder / "ISIC_2019_Training_Input"
    try:
        zip_path = folder / "ISIC_2019_Training_Input.zip"
        zip_was_there = zip_path.is_file()
        if not args.skip_download:
            for filename, (url, md5) in FILES.items():
                if filename.endswith(".zip") and raw_dir.is_dir():
                    continue  # already unzipped
                dl.download(url, folder / filename, md5=md5, timeout=args.timeout,
                            progress=not args.no_progress)
        check_split(folder / "train_test_split")
        if not raw_dir.is_dir():
            dl.extract_zip(zip_path, raw_dir)
        if not args.keep_zip and zip_path.is_file() and not zip_was_there:
            zip_path.unlink()  # downloaded by this run; a zip the user put there is kept
    except dl.DownloadError as error:
        return dl.fail(str(error))
    except (OSError, ValueError) as error:
        return dl.fail(str(error))

    split = read_csv_columns(folder / "train_test_split", ("image",), what="FLamby split file")
    out_dir = folder / PREPROCESSED
    todo = [(raw_dir / f"{img}.jpg", out_dir / f"{img}.jpg") for img in split["image"]
            if not (out_dir / f"{img}.jpg").is_file()]
    print(f"preprocessing {len(todo)} of {len(split)} images into {out_dir}")
    try:
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers) as pool:
                list(pool.map(_preprocess_pair, todo, chunksize=64))
        else:
            for pair in todo:
                _preprocess_pair(pair)
        data = load_isic2019(dataset_dir=folder, image_size=None)
    except (OSError, ValueError) as error:
        return dl.fail(str(error))
    counts = data.class_counts("train") + data.class_counts("test")
    for k, name in enumerate(data.client_names):
        print(f"client {k} {name:18s} train {len(data.train[k]):5d} test {len(data.test[k]):5d}"
              f"  per class {counts[k].tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
