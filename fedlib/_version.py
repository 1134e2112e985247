"""The package version (a leaf module: fedlib.utils reads it without importing fedlib)."""

__version__ = "0.1.0"
