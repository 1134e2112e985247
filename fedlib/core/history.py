"""Per-round and per-client records of a run, as pandas DataFrames."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class History:
    """What a run recorded.

    Attributes
    ----------
    round_records : list of dict
        One row per round: ``round`` (1-based count of rounds done), ``num_clients``,
        ``train_loss`` (example-weighted), ``failed_clients``, ``seconds`` and, when evaluated,
        the global model on the pooled test set (``gen_accuracy``, ``gen_balanced_accuracy``),
        its mean balanced accuracy over the clients' own test splits
        (``gen_client_mean_balanced_accuracy``, absent when all clients share one test set) and,
        with client evaluation, the clients' own models' means (``spec_accuracy``,
        ``spec_balanced_accuracy``). Names are those of :func:`fedlib.evaluation.evaluate`
        with the ``gen_``/``spec_`` prefixes of the run summaries.
    client_records : list of dict
        One row per (round, client) trained or evaluated: ``train_loss``, ``num_examples``,
        method metrics, the global model on that client's test split (``gen_accuracy``,
        ``gen_balanced_accuracy``) and the client's own model (``spec_accuracy``,
        ``spec_balanced_accuracy``).
    """

    round_records: list[dict[str, Any]] = field(default_factory=list)
    client_records: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def rounds(self) -> pd.DataFrame:
        """One row per round."""
        return pd.DataFrame(self.round_records)

    @property
    def clients(self) -> pd.DataFrame:
        """One row per (round, client)."""
        return pd.DataFrame(self.client_records)

    def last(self, metric: str) -> float:
        """The metric at the last round where it was recorded."""
        column = self.rounds.get(metric)
        if column is None or column.dropna().empty:
            raise KeyError(f"History.last: no values recorded for {metric!r}.")
        return float(column.dropna().iloc[-1])

    def mean_last(self, metric: str, n: int = 5) -> float:
        """Mean of the metric over its last ``n`` recorded rounds (the protocol's second number)."""
        column = self.rounds.get(metric)
        if column is None or column.dropna().empty:
            raise KeyError(f"History.mean_last: no values recorded for {metric!r}.")
        return float(column.dropna().iloc[-n:].mean())

    def save(self, directory: str | Path) -> None:
        """Write ``history.csv``, ``clients.csv`` and ``simulation.json`` (the simulator's
        settings, :meth:`Simulation.describe`) into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.rounds.to_csv(out / "history.csv", index=False)
        self.clients.to_csv(out / "clients.csv", index=False)
        (out / "simulation.json").write_text(json.dumps(self.config, indent=2, default=str))
