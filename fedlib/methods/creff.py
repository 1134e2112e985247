"""CReFF: classifier re-training with federated features (Shang et al., IJCAI 2022)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedlib._validation import Interval
from fedlib.core.algorithm import LocalContext
from fedlib.core.batches import iterate_batches
from fedlib.core.protocol import ClientReply, GlobalState, RoundMessage
from fedlib.losses import gradient_match_distance, linear_ce_gradients
from fedlib.methods.fedavg import FedAvg

CLASSIFIER_PREFIX = "creff.classifier."
"""Message side data: the re-trained classifier the clients compute gradients with."""
GRADIENT_PREFIX = "creff.grad."
"""Reply side data ``creff.grad.<c>.weight`` / ``.bias``: one class's mean classifier gradient."""


@dataclass(kw_only=True)
class CReFF(FedAvg):
    r"""FedAvg, plus a classifier re-trained on the server from federated features.

    1. Body and classifier train by FedAvg; the global model keeps FedAvg's classifier.
    2. Before local training, client k computes, for each class c it holds, the gradient of
       the cross-entropy of last round's re-trained classifier :math:`(W, b)` on its real
       features (received body, eval mode) of class c:
       :math:`g_{k,c} = \nabla_{W,b}\,\mathrm{CE}(W \phi(x_i) + b, c)`, mean over its
       class-c examples, and sends it with its update.
    3. Server: :math:`\bar g_c = \frac{1}{|K_c|}\sum_{k \in K_c} g_{k,c}` (unweighted).
    4. It updates synthetic features :math:`F_c` (``features_per_class`` per class, kept
       across rounds in ``GlobalState.extra``) by ``match_steps`` SGD steps (lr
       ``feature_lr``) on :math:`\sum_c D(\nabla_{W,b}\mathrm{CE}(W F_c + b, c), \bar g_c)`
       (:func:`gradient_match_distance`).
    5. A fresh linear classifier is trained on :math:`\{F_c\}` (``retrain_epochs`` epochs of
       SGD, lr ``retrain_lr``, batch ``retrain_batch_size``) and kept in
       ``GlobalState.extra["creff_classifier"]``. It is used for generalization only
       (:meth:`eval_weights`: global body with this classifier) and sent to clients for
       step 2; it never overwrites the global head.

    In round 1 the clients' gradients use the global head. Server-side randomness (initial
    features, fresh classifiers, shuffling) comes from torch's global generator, which the
    simulator seeds. Caveat: per-class gradients reveal which classes a client holds.

    Parameters
    ----------
    features_per_class : int, default 100
    match_steps : int, default 100
    feature_lr : float, default 0.1
    retrain_epochs : int, default 300
    retrain_lr : float, default 0.01
    retrain_batch_size : int, default 32
    head_prefix : str, default "head."
        Prefix of the model's linear classifier (``<prefix>weight``, ``<prefix>bias``).

    References
    ----------
    Shang, Lu, Huang, Wang, "Federated Learning on Heterogeneous and Long-Tailed Data via
    Classifier Re-Training with Federated Features", IJCAI 2022, arXiv:2204.13399;
    github.com/shangxinyi/CReFF-FL. Differences from the reference code: each client's
    per-class gradient is the mean over all its examples of the class (the code averages 10
    random batches of 32), no differentiable augmentation is applied, round 1 uses the
    global head (the code: a fresh random linear layer), and :func:`gradient_match_distance`
    guards the cosine with a floor instead of adding ``eps`` to its denominator.
    """

    name: ClassVar[str] = "creff"
    features_per_class: int = 100
    match_steps: int = 100
    feature_lr: float = 0.1
    retrain_epochs: int = 300
    retrain_lr: float = 0.01
    retrain_batch_size: int = 32
    head_prefix: str = "head."

    _constraints: ClassVar[dict] = {
        "features_per_class": Interval(int, 1, None),
        "match_steps": Interval(int, 0, None),
        "feature_lr": Interval(float, 0, None, closed="neither"),
        "retrain_epochs": Interval(int, 1, None),
        "retrain_lr": Interval(float, 0, None, closed="neither"),
        "retrain_batch_size": Interval(int, 1, None),
    }

    # ------------------------------------------------------------------ helpers
    def _head_keys(self, weights: Mapping[str, torch.Tensor]) -> list[str]:
        keys = [self.head_prefix + n for n in ("weight", "bias") if self.head_prefix + n in weights]
        if not keys or keys[0] != self.head_prefix + "weight":
            raise ValueError(
                f"CReFF: the model has no linear classifier under 'head_prefix'="
                f"{self.head_prefix!r} (no {self.head_prefix}weight)."
            )
        return keys

    def init_global(self, model: nn.Module) -> GlobalState:
        """FedAvg's initial state; the first classifier clients compute gradients with is the
        initial global head."""
        state = super().init_global(model)
        state.extra["creff_classifier"] = {
            k[len(self.head_prefix):]: state.weights[k].detach().clone()
            for k in self._head_keys(state.weights)
        }
        return state

    def current_classifier(self, state: GlobalState) -> dict[str, torch.Tensor]:
        """The classifier sent this round (``weight``, ``bias``): the last re-trained one."""
        return dict(state.extra["creff_classifier"])

    # ------------------------------------------------------------------ server
    def message_for(self, state: GlobalState, client_id: int) -> RoundMessage:
        message = super().message_for(state, client_id)
        side = dict(message.side)
        for name, value in self.current_classifier(state).items():
            side[CLASSIFIER_PREFIX + name] = value
        return dataclasses.replace(message, side=side)

    def process_side(self, state: GlobalState, replies: Sequence[ClientReply]) -> None:
        """Steps 3-5: mean per-class gradients, feature matching, classifier re-training.

        ``state`` is the new global state; its ``extra`` still holds the classifier that was
        sent this round (the one the gradients were computed with).
        """
        super().process_side(state, replies)
        per_class: dict[int, list[dict[str, torch.Tensor]]] = {}
        for reply in replies:
            mine: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in reply.side.items():
                if key.startswith(GRADIENT_PREFIX):
                    c, name = key[len(GRADIENT_PREFIX):].split(".")
                    mine.setdefault(int(c), {})[name] = value
            for c, grads in mine.items():
                per_class.setdefault(c, []).append(grads)
        classifier = self.current_classifier(state)
        names = sorted(classifier, key=lambda n: n != "weight")  # weight first
        mean_grads = {
            c: [torch.stack([g[n] for g in grads]).mean(0) for n in names]
            for c, grads in per_class.items()
        }
        features = state.extra.get("creff_features")
        num_classes, dim = classifier["weight"].shape
        if features is None:
            features = torch.randn(num_classes * self.features_per_class, dim)
        features = self.match_features(features, classifier, names, mean_grads)
        state.extra["creff_features"] = features
        state.extra["creff_classifier"] = self.retrain_classifier(features, num_classes)

    def feature_labels(self, num_classes: int) -> torch.Tensor:
        """Labels of the synthetic features: ``features_per_class`` of class 0, then 1, ..."""
        return torch.arange(num_classes).repeat_interleave(self.features_per_class)

    def match_features(
        self,
        features: torch.Tensor,
        classifier: Mapping[str, torch.Tensor],
        names: list[str],
        mean_grads: Mapping[int, list[torch.Tensor]],
    ) -> torch.Tensor:
        """``match_steps`` SGD steps of the synthetic features on the gradient distance.

        Only the features of classes with client gradients move; all classes are matched in
        one batched step (:func:`linear_ce_gradients`).
        """
        features = features.detach().clone().requires_grad_(True)
        if not mean_grads or self.match_steps == 0:
            return features.detach()
        weight = classifier["weight"].detach()
        bias = classifier["bias"].detach() if "bias" in names else None
        classes = sorted(mean_grads)
        m, dim = self.features_per_class, features.shape[1]
        targets = [torch.stack([mean_grads[c][i] for c in classes]) for i in range(len(names))]
        labels = torch.tensor(classes).unsqueeze(1).expand(len(classes), m)
        optimizer = torch.optim.SGD([features], lr=self.feature_lr)
        for _ in range(self.match_steps):
            per_class = features.view(-1, m, dim)[classes]
            synthetic = linear_ce_gradients(per_class, labels, weight, bias)
            loss = gradient_match_distance(synthetic[: len(targets)], targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return features.detach()

    def retrain_classifier(
        self, features: torch.Tensor, num_classes: int
    ) -> dict[str, torch.Tensor]:
        """A fresh linear classifier (PyTorch's default initialisation) trained on the synthetic
        features by mini-batch SGD without momentum."""
        fresh = nn.Linear(features.shape[1], num_classes)
        weight, bias = fresh.weight.detach().clone(), fresh.bias.detach().clone()
        labels = self.feature_labels(num_classes)
        n, lr = len(features), self.retrain_lr
        for _ in range(self.retrain_epochs):
            order = torch.randperm(n)
            for start in range(0, n, self.retrain_batch_size):
                idx = order[start : start + self.retrain_batch_size]
                grad_w, grad_b = linear_ce_gradients(features[idx], labels[idx], weight, bias)
                weight -= lr * grad_w
                bias -= lr * grad_b
        return {"weight": weight, "bias": bias}

    # ------------------------------------------------------------------ client
    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        """Per-class mean classifier gradients on real features of the received body, sent in
        the reply's side channel."""
        weight = ctx.message.side[CLASSIFIER_PREFIX + "weight"].to(ctx.device)
        bias = ctx.message.side.get(CLASSIFIER_PREFIX + "bias")
        params = [weight.clone().requires_grad_(True)]
        if bias is not None:
            params.append(bias.to(ctx.device).clone().requires_grad_(True))
        model.eval()
        with torch.no_grad():
            batches = [
                (model.features(x.to(ctx.device)), y.to(ctx.device))
                for x, y, *_ in iterate_batches(ctx.data, 1024, shuffle=False)
            ]
        model.train()
        if batches:
            h = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            for c in np.flatnonzero(ctx.class_counts):
                h_c = h[y == int(c)]
                logits = F.linear(h_c, params[0], params[1] if len(params) > 1 else None)
                ce = F.cross_entropy(logits, torch.full((len(h_c),), int(c), device=ctx.device))
                for name, grad in zip(("weight", "bias"), torch.autograd.grad(ce, params),
                                      strict=False):
                    ctx.side[f"{GRADIENT_PREFIX}{int(c)}.{name}"] = grad.detach().cpu()

    # ------------------------------------------------------------------ evaluation
    def eval_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: GlobalState
    ) -> dict[str, torch.Tensor]:
        """The global body with the re-trained classifier (once there is one)."""
        weights = dict(global_weights)
        for name, value in state.extra.get("creff_classifier", {}).items():
            weights[self.head_prefix + name] = value
        return weights
