"""Extra heads on top of a classifier: a personal head (FedRoD, FCA) and a projection head (MOON).

The wrappers *adopt* the base model's submodules under their own names, so the wrapped
model's state-dict keys are the base's keys (``body.*``, ``head.*``) plus the new module's
(``personal_head.*``, ``projection.*``), and FedAvg, FedPer-style prefixes and checkpoints see
one flat model. The base model's own methods (``features``, ``classify``) keep working on the
adopted modules. A base must expose ``features(x) -> h`` of shape (N, ``feature_dim``),
``classify(h) -> z``, an integer ``feature_dim`` and a linear ``head``, as
:class:`fedlib.models.SmallCNN` does; it must keep all its tensors inside submodules.
"""

from __future__ import annotations

import torch
from torch import nn

from fedlib._validation import Interval, Options, check_param


class ExtendedModel(nn.Module):
    """A classifier whose modules are the base model's, plus the ones a subclass adds.

    Parameters
    ----------
    base : nn.Module
        A classifier with ``features``, ``classify``, ``feature_dim`` and a linear ``head``.
    """

    def __init__(self, base: nn.Module):
        super().__init__()
        owner = type(self).__name__
        missing = [
            name for name in ("features", "classify", "feature_dim", "head")
            if not hasattr(base, name)
        ]
        if not isinstance(base, nn.Module) or missing:
            raise TypeError(
                f"{owner}: 'base' must be an nn.Module with features(x), classify(h), "
                f"feature_dim and head (as SmallCNN), got {type(base).__name__} "
                f"missing {missing}."
            )
        if not isinstance(base.head, nn.Linear):
            raise TypeError(
                f"{owner}: 'base.head' must be an nn.Linear, got {type(base.head).__name__}."
            )
        own = [n for n, _ in base.named_parameters(recurse=False)]
        own += [n for n, _ in base.named_buffers(recurse=False)]
        if own:
            raise TypeError(
                f"{owner}: 'base' must keep its tensors inside submodules, got top-level {own}."
            )
        for name, child in base.named_children():
            self.add_module(name, child)
        # Not registered as a submodule: its tensors are already ours under the same names.
        object.__setattr__(self, "_base", base)
        self.feature_dim = int(base.feature_dim)

    def train(self, mode: bool = True) -> ExtendedModel:
        super().train(mode)
        self._base.training = mode
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The base model's features ``h = phi(x)``, shape (N, feature_dim)."""
        return self._base.features(x)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """The base model's logits from features (its ``head``)."""
        return self._base.classify(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


class TwoHeadClassifier(ExtendedModel):
    """A classifier with a second, personal linear head on the same features.

    ``forward(x)`` returns the generic (shared) head's logits ``z_g = head(h)``, so the model
    evaluates like its base; ``forward_heads(x)`` returns ``(z_g, z_p, h)`` with
    ``z_p = personal_head(h)``.

    Parameters
    ----------
    base : nn.Module
        See :class:`ExtendedModel`. Its ``head`` is the generic head.
    num_classes : int, optional
        Outputs of the personal head; default the base head's.

    Examples
    --------
    >>> from fedlib.models import SmallCNN
    >>> model = TwoHeadClassifier(SmallCNN(3, 4, width=2))
    >>> sorted({k.split(".")[0] for k in model.state_dict()})
    ['body', 'head', 'personal_head']
    """

    def __init__(self, base: nn.Module, num_classes: int | None = None):
        super().__init__(base)
        num_classes = base.head.out_features if num_classes is None else num_classes
        check_param("TwoHeadClassifier", "num_classes", num_classes, Interval(int, 1, None))
        self.personal_head = nn.Linear(
            self.feature_dim, num_classes, bias=base.head.bias is not None
        )

    def classify_personal(self, h: torch.Tensor) -> torch.Tensor:
        """The personal head's logits ``z_p = W_p h + b_p``."""
        return self.personal_head(h)

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_g, z_p, h)``: generic logits, personal logits and features."""
        h = self.features(x)
        return self.classify(h), self.classify_personal(h), h


class ProjectionHeadModel(ExtendedModel):
    """A classifier with MOON's projection head, a 2-layer MLP on the features.

    ``r = projection(h) = W_2 relu(W_1 h + b_1) + b_2`` with ``W_1`` of shape (d, d) and ``W_2``
    of shape (out_dim, d), as in MOON's ``ModelFedCon``.

    Parameters
    ----------
    base : nn.Module
        See :class:`ExtendedModel`.
    out_dim : int, default 256
        Projection size.
    head_input : {"projection", "features"}, default "projection"
        What the classifier reads. "projection" (MOON's code): a new linear head on ``r``
        replaces the base head, ``z = head(r)``. "features": the base head stays on ``h`` and
        the projection is a side branch used only by the contrastive loss.

    References
    ----------
    Li, He, Song, "Model-Contrastive Federated Learning", CVPR 2021, arXiv:2103.16257; code
    github.com/QinbinLi/MOON (``model.py``).
    """

    def __init__(self, base: nn.Module, out_dim: int = 256, head_input: str = "projection"):
        super().__init__(base)
        check_param("ProjectionHeadModel", "out_dim", out_dim, Interval(int, 1, None))
        check_param(
            "ProjectionHeadModel", "head_input", head_input, Options(("projection", "features"))
        )
        self.head_input = head_input
        d = self.feature_dim
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, out_dim))
        if head_input == "projection":
            self.head = nn.Linear(out_dim, base.head.out_features, bias=base.head.bias is not None)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """The projection ``r`` of features ``h``, shape (N, out_dim)."""
        return self.projection(h)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        if self.head_input == "projection":
            return self.head(self.project(h))
        return self._base.classify(h)
