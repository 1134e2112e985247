"""Download HAM10000 (images, metadata, lesion masks) from Harvard Dataverse.

Usage::

    python data_scripts/ham10000.py [--root DIR] [--no-masks]

Dataset: Tschandl, Rosendahl & Kittler, "The HAM10000 dataset", Scientific Data 5, 180161 (2018),
Harvard Dataverse doi:10.7910/DVN/DBW86T (licence CC BY-NC 4.0; accept the dataset terms on its
page before use). The same record holds ``HAM10000_segmentations_lesion_tschandl.zip``, a lesion
mask ``<image_id>_segmentation.png`` for every image (the masks FedMix uses).

The file list, file ids and MD5 sums are read at run time from Dataverse's native API
(``/api/datasets/:persistentId``), so each zip is verified against the checksum the repository
publishes. The metadata table is stored by Dataverse as an ingested tabular file whose published
checksum is not reliable for the downloaded original (IQSS/dataverse#9501); it is therefore
fetched as the original CSV and checked by content instead (columns, 10,015 rows).
Files land in ``<root>/ham10000``; the zips are unpacked and removed unless ``--keep-zip``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _download as dl

from fedlib.data.real._io import read_csv_columns
from fedlib.data.real.ham10000 import HAM10000_METADATA_COLUMNS, load_ham10000
from fedlib.data.root import data_root

DATAVERSE = "https://dataverse.harvard.edu"
DOI = "doi:10.7910/DVN/DBW86T"
DATASET_API = f"{DATAVERSE}/api/datasets/:persistentId/?persistentId={DOI}"
FILE_API = DATAVERSE + "/api/access/datafile/{file_id}"
ZIPS = ("HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip")
MASKS_ZIP = "HAM10000_segmentations_lesion_tschandl.zip"
METADATA_STEM = "HAM10000_metadata"
EXPECTED_IMAGES = 10015


def list_files(timeout: float) -> dict[str, dict]:
    """Dataverse file entries of the latest version, keyed by original file name."""
    answer = dl.fetch_json(DATASET_API, timeout=timeout)
    try:
        files = answer["data"]["latestVersion"]["files"]
    except (KeyError, TypeError) as error:
        raise dl.DownloadError(f"{DATASET_API}: unexpected answer ({error!r} missing).") from error
    entries = {}
    for entry in files:
        data_file = entry.get("dataFile", {})
        for name in (data_file.get("originalFileName"), data_file.get("filename"),
                     entry.get("label")):
            if name:
                entries.setdefault(name, data_file)
    return entries


def published_md5(data_file: dict) -> str | None:
    checksum = data_file.get("checksum") or {}
    if str(checksum.get("type", "")).upper() == "MD5":
        return checksum.get("value")
    return data_file.get("md5")


def fetch(entries: dict[str, dict], name: str, dest: Path, args) -> Path:
    if name not in entries:
        raise dl.DownloadError(f"{DOI}: no file named {name!r}; the record lists "
                               f"{', '.join(sorted(entries))}.")
    data_file = entries[name]
    url = FILE_API.format(file_id=data_file["id"])
    tabular = "originalFileFormat" in data_file
    if tabular:
        url += "?format=original"
    md5 = None if tabular else published_md5(data_file)
    if md5 is None and not tabular:
        raise dl.DownloadError(f"{DOI}: {name} has no published MD5; refusing to download it "
                               "unverified.")
    return dl.download(url, dest, md5=md5, timeout=args.timeout, progress=not args.no_progress)


def check_metadata(path: Path) -> None:
    """Check the table by content (it has no usable checksum); a bad file is moved aside
    (never deleted: it may be the user's own), so the next run fetches a fresh one."""
    try:
        meta = read_csv_columns(path, HAM10000_METADATA_COLUMNS, what="HAM10000 metadata CSV")
        if len(meta) != EXPECTED_IMAGES:
            raise ValueError(f"{path}: expected {EXPECTED_IMAGES} rows, found {len(meta)}.")
    except ValueError as error:
        if path.is_file():
            aside = dl.move_aside(path, "not the HAM10000 metadata table")
            raise ValueError(f"{error} It was moved aside to {aside}.") from error
        raise


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dl.add_common_arguments(parser)
    parser.add_argument("--no-masks", action="store_true", help="skip the lesion masks")
    parser.add_argument("--keep-zip", action="store_true", help="keep the zips after unzipping")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = data_root(args.root) / "ham10000"
    folder.mkdir(parents=True, exist_ok=True)
    zips = ZIPS + (() if args.no_masks else (MASKS_ZIP,))
    metadata = folder / "HAM10000_metadata.csv"
    missing = [name for name in zips if not (folder / name[: -len(".zip")]).is_dir()]
    try:
        if missing or not metadata.is_file():
            entries = list_files(args.timeout)
        if not metadata.is_file():
            name = next((n for n in entries if n.startswith(METADATA_STEM)), METADATA_STEM)
            fetch(entries, name, metadata, args)
        check_metadata(metadata)
        for name in missing:
            target = folder / name[: -len(".zip")]
            zip_was_there = (folder / name).is_file()
            zip_path = fetch(entries, name, folder / name, args)
            dl.extract_zip(zip_path, target)
            if not args.keep_zip and not zip_was_there:
                zip_path.unlink()  # downloaded by this run; a zip the user put there is kept
        data = load_ham10000(dataset_dir=folder, with_masks=not args.no_masks, image_size=None)
    except dl.DownloadError as error:
        return dl.fail(str(error))
    except (OSError, ValueError) as error:
        return dl.fail(str(error))
    for k, name in enumerate(data.client_names):
        print(f"client {k} {name:14s} train {len(data.train[k]):5d} test {len(data.test[k]):5d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
