"""UDIAT breast ultrasound "Dataset B": how to obtain it (request to the authors), layout check.

Usage::

    python data_scripts/udiat.py [--root DIR] [--images original] [--masks GT]

Dataset B (163 images with lesion masks, UDIAT Diagnostic Centre, Sabadell; Yap et al.,
"Automated breast ultrasound lesions detection using convolutional neural networks", IEEE
Journal of Biomedical and Health Informatics 22(4), 1218-1226, 2018) is shared by the authors
under a licence agreement; there is no public download, so this script only prints the steps
and, once the files are in place, checks that images and masks pair up.
"""

from __future__ import annotations

import sys

from _request_only import run

INSTRUCTIONS = """UDIAT Dataset B is available on request only.
1. Go to http://www2.docm.mmu.ac.uk/STAFF/m.yap/dataset.php (M. H. Yap, Manchester
   Metropolitan University) and request the dataset (licence agreement by e-mail).
2. Put the images in   {images}
   and the masks in    {masks}
   (the original/ + GT/ layout with equal file names that the FedMix code reads; use
   --images/--masks/--mask-suffix if your copy is organised differently).
3. Run this script again to check the layout; load the data with
   fedlib.data.real.paired_folder_dataset(images_dir, masks_dir)."""


def main(argv: list[str] | None = None) -> int:
    return run(argv, name="UDIAT Dataset B", folder="udiat", instructions=INSTRUCTIONS)


if __name__ == "__main__":
    sys.exit(main())
