"""The algorithm protocol, the in-process simulator, aggregation, history and checkpoints."""

from fedlib.core.aggregation import weighted_average
from fedlib.core.algorithm import Algorithm, LocalContext, build_model
from fedlib.core.history import History
from fedlib.core.protocol import ClientReply, ClientState, GlobalState, RoundMessage, wire_size
from fedlib.core.simulation import ClientError, Simulation, derive_seed, predict

__all__ = [
    "Algorithm",
    "ClientError",
    "ClientReply",
    "ClientState",
    "GlobalState",
    "History",
    "LocalContext",
    "RoundMessage",
    "Simulation",
    "build_model",
    "derive_seed",
    "predict",
    "weighted_average",
    "wire_size",
]
