"""The seeded steps of a round that every driver of an :class:`~fedlib.core.Algorithm` runs the
same way: one client's local round, its fine-tuning for evaluation, and the server's
aggregation step.

The in-process simulator (:class:`~fedlib.core.Simulation`) and the Flower adapter
(:mod:`fedlib.flower`) both call :func:`local_round`, :func:`aggregate_round` and
:func:`finetune_for_evaluation`, so a deployment and a simulation of the same seed and clients
draw the same random numbers and give the same models. Every seed derives from the run's seed
by :func:`derive_seed`:

======================================  =======================================================
``derive_seed(seed, round, client)``    a client's local round (batch order, dropout masks)
``derive_seed(seed, round, client, 1)`` a client's fine-tuning for evaluation
                                        (:data:`EVAL_SEED_TAG`)
``derive_seed(seed, round, 0, 2)``      the server's aggregation step (:data:`SERVER_SEED_TAG`)
======================================  =======================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fedlib.core.aggregation import nonfinite_error
from fedlib.core.algorithm import Algorithm, working_copy
from fedlib.core.protocol import ClientReply, ClientState, GlobalState, RoundMessage

__all__ = [
    "EVAL_SEED_TAG",
    "SERVER_SEED_TAG",
    "aggregate_round",
    "check_finite",
    "derive_seed",
    "derive_seeds",
    "finetune_for_evaluation",
    "local_round",
    "seed_global_generators",
]

EVAL_SEED_TAG = 1
"""Fourth part of the seed of evaluation-time work, ``(seed, round, client, EVAL_SEED_TAG)``."""
SERVER_SEED_TAG = 2
"""Fourth part of the seed of the server's aggregation step, ``(seed, round, 0, 2)``: a method
whose server step draws random numbers (CReFF's synthetic features) draws the same ones in the
simulator and in every deployment."""


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, round, client id), independent per tuple."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


_WORD = np.uint64(0xFFFFFFFF)


def derive_seeds(prefix: tuple[int, ...], last: list[int]) -> list[int]:
    """``[derive_seed(*prefix, c) for c in last]``, computed for all ``c`` at once.

    numpy's ``SeedSequence`` (the entropy pool of O'Neill's ``seed_seq``: hash, mix, then
    generate two 32-bit words) written on arrays of 32-bit words held in ``uint64``; parts of
    32 bits or more take the one-by-one path.
    """
    parts = [int(p) for p in prefix]
    if not last or any(not 0 <= p < 2**32 for p in [*parts, *last]):
        return [derive_seed(*parts, c) for c in last]
    n = len(last)
    words = [np.full(n, p, dtype=np.uint64) for p in parts] + [np.asarray(last, np.uint64)]
    state = {"hash": np.uint64(0x43B0D7E5)}

    def hashmix(value: np.ndarray) -> np.ndarray:
        value = (value ^ state["hash"]) & _WORD
        state["hash"] = (state["hash"] * np.uint64(0x931E8875)) & _WORD
        value = (value * state["hash"]) & _WORD
        return value ^ (value >> np.uint64(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result = (np.uint64(0xCA01F9DD) * x - np.uint64(0x4973F715) * y) & _WORD
        return result ^ (result >> np.uint64(16))

    zero = np.zeros(n, dtype=np.uint64)
    pool = [hashmix(words[i] if i < len(words) else zero) for i in range(4)]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    for src in range(4, len(words)):
        for dst in range(4):
            pool[dst] = mix(pool[dst], hashmix(words[src]))
    out, hash_b = [], 0x8B51F9DD
    for i in range(2):
        value = (pool[i] ^ np.uint64(hash_b)) & _WORD
        hash_b = (hash_b * 0x58F38DED) & 0xFFFFFFFF
        value = (value * np.uint64(hash_b)) & _WORD
        out.append(value ^ (value >> np.uint64(16)))
    return ((out[0] | (out[1] << np.uint64(32))) >> np.uint64(1)).tolist()


def seed_global_generators(seed: int, device: torch.device) -> None:
    """Seed torch's global generators that local work may draw from (dropout masks,
    ``torch.randn`` in a hook): the CPU one, and ``device``'s when it is a CUDA device.
    Cheaper than ``torch.manual_seed``, which also registers every accelerator, and the same
    CPU stream."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)


def check_finite(reply: ClientReply, *, arrays_finite: bool | None = None) -> None:
    """Raise ``FloatingPointError`` when a reply's arrays or training loss are not finite (one
    batched max-norm over the arrays, unless the caller already knows, ``arrays_finite``; the
    offending keys are named)."""
    if arrays_finite is None:
        floats = [v for v in reply.arrays.values() if v.is_floating_point()]
        arrays_finite = not floats or math.isfinite(
            torch.stack(torch._foreach_norm(floats, math.inf)).max()
        )
    if not arrays_finite:
        raise nonfinite_error(reply.arrays)
    if not math.isfinite(reply.metrics.get("train_loss", 0.0)):
        raise FloatingPointError("its training loss is not finite")


def local_round(
    algorithm: Algorithm,
    model: nn.Module,
    message: RoundMessage,
    state: ClientState,
    data: Dataset,
    *,
    seed: int,
    client_id: int,
    num_classes: int,
    initial_weights: Mapping[str, torch.Tensor],
    device: torch.device,
    keep_post_local: bool | None = None,
    client_seed: int | None = None,
    check_arrays: bool = True,
) -> tuple[ClientReply, ClientState]:
    """One client's seeded local round: what the simulator and a Flower node run.

    The round's seed is ``s = derive_seed(seed, message.round, client_id)`` (``client_seed``,
    when the caller derived it already, e.g. with :func:`derive_seeds` for a whole round). It
    seeds torch's global generators (:func:`seed_global_generators`) and a fresh generator
    that shuffles the batches (``LocalContext.generator``); then
    :meth:`Algorithm.client_update` loads ``model`` from the message and ``state``, builds the
    context, trains, and returns the reply and the client's new state (``state`` itself is
    not modified). The global generators are left seeded for this client: a caller that needs
    them back wraps the call in ``torch.random.fork_rng``. Raises ``FloatingPointError`` when
    the update is not finite (:func:`check_finite`); ``check_arrays=False`` checks only the
    training loss, for a caller that tests the arrays itself (the simulator does, while it
    adds them to the round's average: ``StreamingAverage.add(..., check_finite=True)``).
    """
    if client_seed is None:
        client_seed = derive_seed(seed, message.round, client_id)
    seed_global_generators(client_seed, device)
    reply, new_state = algorithm.client_update(
        model,
        message,
        state,
        data,
        client_id=client_id,
        num_classes=num_classes,
        initial_weights=initial_weights,
        generator=torch.Generator().manual_seed(client_seed),
        device=device,
        keep_post_local=keep_post_local,
    )
    check_finite(reply, arrays_finite=None if check_arrays else True)
    return reply, new_state


def aggregate_round(
    algorithm: Algorithm, state: GlobalState, replies: Sequence[ClientReply], *, seed: int
) -> GlobalState:
    """The server's step of round ``state.round``: ``algorithm.aggregate(state, replies)``
    with torch's CPU generator seeded by ``derive_seed(seed, state.round, 0,
    SERVER_SEED_TAG)`` and restored afterwards.

    The global state lives on the CPU, so a server step that draws random numbers (CReFF's
    initial synthetic features and fresh classifiers) draws them from that generator: the
    same numbers in the simulator and in a deployment, whatever the clients drew. ``replies``
    must be sorted by client id (both drivers do).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(derive_seed(seed, state.round, 0, SERVER_SEED_TAG))
        return algorithm.aggregate(state, replies)


def finetune_for_evaluation(
    algorithm: Algorithm,
    model: nn.Module,
    message: RoundMessage,
    state: ClientState,
    data: Dataset,
    *,
    seed: int,
    client_id: int,
    num_classes: int,
    device: torch.device,
) -> None:
    """``algorithm.finetune_for_eval`` on ``model`` (which holds the client's specialization
    weights) before the client's model is evaluated after ``message.round`` rounds.

    Seeded by ``derive_seed(seed, message.round, client_id, EVAL_SEED_TAG)`` (the global
    generators and the context's generator); works on a working copy of ``state``; torch's
    global CPU random state is restored afterwards.
    """
    eval_seed = derive_seed(seed, message.round, client_id, EVAL_SEED_TAG)
    with torch.random.fork_rng(devices=[]):
        seed_global_generators(eval_seed, device)
        model.to(device).train()
        ctx = algorithm.local_context(
            model, message, working_copy(state), data, client_id=client_id,
            num_classes=num_classes, generator=torch.Generator().manual_seed(eval_seed),
            device=device,
        )
        algorithm.finetune_for_eval(model, ctx)
