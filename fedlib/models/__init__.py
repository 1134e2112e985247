"""Models: small CNNs whose state splits into ``body.*`` (features) and ``head.*`` (classifier)."""

from fedlib.models.cnn import SmallCNN

__all__ = ["SmallCNN"]
