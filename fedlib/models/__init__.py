"""Models: small CNNs whose state splits into ``body.*`` (features) and ``head.*`` (classifier),
and wrappers that add a personal head or a projection head."""

from fedlib.models.cnn import SmallCNN
from fedlib.models.heads import ExtendedModel, ProjectionHeadModel, TwoHeadClassifier
from fedlib.models.unet import UNet

__all__ = ["ExtendedModel", "ProjectionHeadModel", "SmallCNN", "TwoHeadClassifier", "UNet"]
