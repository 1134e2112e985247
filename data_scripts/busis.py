"""BUSIS breast ultrasound benchmark: how to obtain it (request to the authors) and a layout check.

Usage::

    python data_scripts/busis.py [--root DIR] [--images original] [--masks GT]

BUSIS (562 images with expert lesion masks; Zhang, Xian, Cheng et al., "BUSIS: a benchmark for
breast ultrasound image segmentation", Healthcare 10(4), 729, 2022, arXiv:1801.03182) is shared
by its authors after a signed data-use agreement; there is no public download, so this script
only prints the steps and, once the files are in place, checks that images and masks pair up.
"""

from __future__ import annotations

import sys

from _request_only import run

INSTRUCTIONS = """BUSIS is available on request only.
1. Go to http://cvprip.cs.usu.edu/busbench/ (the benchmark page named in the BUSIS papers) and
   follow its instructions to request the data (a signed data-use agreement by e-mail).
2. Put the images in   {images}
   and the masks in    {masks}
   with the same file name (stem) for an image and its mask (use --mask-suffix if the mask
   stems carry a suffix, e.g. _GT).
3. Run this script again to check the layout; load the data with
   fedlib.data.real.paired_folder_dataset(images_dir, masks_dir)."""


def main(argv: list[str] | None = None) -> int:
    return run(argv, name="BUSIS", folder="busis", instructions=INSTRUCTIONS)


if __name__ == "__main__":
    sys.exit(main())
