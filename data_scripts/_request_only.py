"""Shared logic for datasets that are given only on request (BUSIS, UDIAT).

The script prints how to obtain the data and where to put it; once the folders exist it checks
that images and masks pair up, using ``fedlib.data.real.paired_folder_dataset``.
"""

from __future__ import annotations

import argparse

from fedlib.data.real.busi import paired_folder_dataset
from fedlib.data.root import data_root


def run(argv: list[str] | None, *, name: str, folder: str, instructions: str) -> int:
    parser = argparse.ArgumentParser(description=f"Instructions and layout check for {name}.")
    parser.add_argument("--root", help="data root (default: $FEDLIB_DATA_DIR or ~/.cache/fedlib)")
    parser.add_argument("--images", default="original", help="image sub-folder name")
    parser.add_argument("--masks", default="GT", help="mask sub-folder name")
    parser.add_argument("--mask-suffix", default="", help="suffix of mask file stems, if any")
    args = parser.parse_args(argv)
    base = data_root(args.root) / folder
    images, masks = base / args.images, base / args.masks
    if not (images.is_dir() and masks.is_dir()):
        print(instructions.format(images=images, masks=masks))
        return 1
    try:
        data = paired_folder_dataset(images, masks, mask_suffix=args.mask_suffix,
                                     image_size=None)
    except (OSError, ValueError) as error:
        print(f"error: {error}")
        return 2
    print(f"{name}: {len(data)} image/mask pairs in {base}")
    return 0
