"""RSNA intracranial haemorrhage: the authors' client splits, Kaggle instructions, windowing.

Usage::

    python data_scripts/rsna_ich.py [--root DIR] [--kaggle-dir DIR] [--window 40 80] [--size N]

Steps (files under ``<root>/rsna_ich``):

1. download the FedNPR/FCA authors' client splits ``ich_datasplit_10cl.npy`` and
   ``ich_datasplit_5cl.npy`` from their FCA repository (pinned commit) and convert them once,
   with fedlib's restricted unpickler, to plain JSON: ``ich_split_10clients.json`` and
   ``ich_split_5clients.json`` (no checksum is published for them);
2. the images and labels come from the Kaggle competition "RSNA Intracranial Hemorrhage
   Detection", which needs a Kaggle account and accepting the competition rules: without them
   the script prints the exact steps and stops;
3. with ``stage_2_train.csv`` and ``stage_2_train/*.dcm`` in place, every slice of the splits is
   converted to Hounsfield units (RescaleSlope/Intercept), windowed (default brain window
   level 40, width 80) and saved as an 8-bit PNG ``png/ID_<id>.png`` (atomic writes; existing
   files are skipped, so an interrupted run resumes);
4. the result is loaded with ``fedlib.data.real.load_rsna_ich`` and the per-client counts printed.

Data: Flanders et al., Radiology: Artificial Intelligence 2(3), e190211 (2020); use is bound by
the competition rules (non-commercial research).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _download as dl
import numpy as np
from PIL import Image

from fedlib.data.real._io import atomic_save_image, atomic_write_bytes
from fedlib.data.real.preprocess import ICH_BRAIN_WINDOW, read_dicom_windowed
from fedlib.data.real.rsna_ich import load_rsna_ich
from fedlib.data.real.splits import convert_pickled_split, read_client_split
from fedlib.data.root import data_root

FCA_COMMIT = "bd73933951fa7c34afda5cf16feef94ce1e87873"
SPLIT_URL = "https://raw.githubusercontent.com/Jwicaksana/FCA/" + FCA_COMMIT + "/{filename}"
SPLITS = {
    # source file: (converted JSON, md5) -- the authors publish no checksum.
    "ich_datasplit_10cl.npy": ("ich_split_10clients.json", None),
    "ich_datasplit_5cl.npy": ("ich_split_5clients.json", None),
}
COMPETITION = "rsna-intracranial-hemorrhage-detection"

KAGGLE_INSTRUCTIONS = """RSNA-ICH images need a Kaggle account; fedlib cannot download them for you.
1. Sign in at https://www.kaggle.com, open
   https://www.kaggle.com/competitions/{competition}/rules and accept the rules.
2. Create an API token (kaggle.com > Settings > API > Create New Token) and save it as
   ~/.kaggle/kaggle.json (chmod 600), then: pip install kaggle
3. Download (several hundred thousand DICOM files, well over 100 GB):
       kaggle competitions download -c {competition} -p {folder}
       cd {folder} && unzip {competition}.zip 'stage_2_train.csv' 'stage_2_train/*'
   (or unzip everything and pass --kaggle-dir to the folder holding stage_2_train.csv).
4. Run this script again: it windows the slices of the client splits into PNGs."""


def fetch_splits(folder: Path, args) -> list[Path]:
    converted = []
    for source, (json_name, md5) in SPLITS.items():
        target = folder / json_name
        if not target.is_file():
            npy = dl.download(SPLIT_URL.format(filename=source), folder / source, md5=md5,
                              timeout=args.timeout, progress=not args.no_progress)
            convert_pickled_split(npy, target)
        converted.append(target)
    return converted


def split_image_ids(split_files: list[Path]) -> list[str]:
    ids: dict[str, None] = {}
    for path in split_files:
        split = read_client_split(path)
        for part in ("train", "test"):
            for client in split.clients:
                for image in split.images[part][client]:
                    name = image if image.startswith("ID_") else f"ID_{image}"
                    ids[name] = None
    return list(ids)


def window_to_png(source: Path, target: Path, level: float, width: float,
                  size: int | None) -> None:
    """Window one DICOM slice and save it as an 8-bit grey PNG (value = round(255 w))."""
    windowed = np.asarray(read_dicom_windowed(source, level=level, width=width))
    image = Image.fromarray(np.round(windowed * 255.0).astype(np.uint8))
    if size is not None:
        image = image.resize((size, size), resample=Image.Resampling.BILINEAR)
    atomic_save_image(image, target)


def find_kaggle_dir(folder: Path, given: str | None) -> Path | None:
    candidates = [Path(given)] if given else [folder, folder / COMPETITION]
    for candidate in candidates:
        if (candidate / "stage_2_train.csv").is_file() and (candidate / "stage_2_train").is_dir():
            return candidate
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dl.add_common_arguments(parser)
    parser.add_argument("--kaggle-dir", help="folder with stage_2_train.csv and stage_2_train/")
    parser.add_argument("--window", type=float, nargs=2, default=ICH_BRAIN_WINDOW,
                        metavar=("LEVEL", "WIDTH"), help="CT window in HU (default 40 80)")
    parser.add_argument("--size", type=int, default=None,
                        help="also resize the PNGs to SIZE x SIZE (default: keep 512 x 512)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = data_root(args.root) / "rsna_ich"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        split_files = fetch_splits(folder, args)
    except dl.DownloadError as error:
        return dl.fail(str(error))
    except (OSError, ValueError) as error:
        return dl.fail(str(error))
    print("client splits: " + ", ".join(str(p) for p in split_files))

    kaggle_dir = find_kaggle_dir(folder, args.kaggle_dir)
    if kaggle_dir is None:
        print(KAGGLE_INSTRUCTIONS.format(competition=COMPETITION, folder=folder))
        return 1

    level, width = args.window
    png_dir = folder / "png"
    record = {"level": level, "width": width, "size": args.size}
    record_path = png_dir / "window.json"
    if record_path.is_file() and json.loads(record_path.read_text()) != record:
        return dl.fail(f"{png_dir} holds PNGs made with {record_path.read_text().strip()}, not "
                       f"{record}; delete the folder or pass the same --window/--size.")
    atomic_write_bytes(record_path, json.dumps(record).encode())
    ids = split_image_ids(split_files)
    todo = [i for i in ids if not (png_dir / f"{i}.png").is_file()]
    print(f"windowing {len(todo)} of {len(ids)} slices into {png_dir}")
    try:
        for image_id in todo:
            window_to_png(kaggle_dir / "stage_2_train" / f"{image_id}.dcm",
                          png_dir / f"{image_id}.png", level, width, args.size)
        for path in split_files:
            data = load_rsna_ich(dataset_dir=folder, split_file=path,
                                 labels_csv=kaggle_dir / "stage_2_train.csv", images_dir=png_dir)
            sizes = [(len(data.train[k]), len(data.test[k])) for k in data.client_ids()]
            print(f"{path.name}: (train, test) per client {sizes}")
    except (OSError, ValueError) as error:
        return dl.fail(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
