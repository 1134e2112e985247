"""``python -m fedlib``: see :mod:`fedlib.cli`."""

import sys

from fedlib.cli import main

sys.exit(main())
