"""fedlib: federated learning for medical imaging, the package behind the course book."""

from fedlib._version import __version__
from fedlib.utils import device, print_config, seed_everything

__all__ = ["__version__", "device", "print_config", "seed_everything"]
