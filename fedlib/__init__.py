"""fedlib: federated learning for medical imaging, the package behind the course book."""

from fedlib.utils import device, print_config, seed_everything

__version__ = "0.1.0"

__all__ = ["__version__", "device", "print_config", "seed_everything"]
