"""Customer and terminal profiles of the handbook simulator (fixed for a seed and sizes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

# Distinct random streams: a profile draw never shares numbers with a day's draws.
STREAM_CUSTOMERS = 1
STREAM_TERMINALS = 2
STREAM_DRIFT_SELECTION = 3


def stream(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for (seed, key...): the basis of day independence."""
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


@dataclass(frozen=True)
class Terminals:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Customers:
    x: np.ndarray
    y: np.ndarray
    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_nb_tx_per_day: np.ndarray
    # Terminals each customer may use, as CSR: terminals[offsets[c]:offsets[c + 1]].
    offsets: np.ndarray
    terminals: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    @property
    def n_terminals(self) -> np.ndarray:
        """How many terminals each customer can reach."""
        return np.diff(self.offsets)


def make_terminals(seed: int, n_terminals: int) -> Terminals:
    rng = stream(seed, STREAM_TERMINALS)
    xy = rng.uniform(0, 100, size=(n_terminals, 2))
    return Terminals(x=xy[:, 0], y=xy[:, 1])


def terminals_within(
    x: np.ndarray, y: np.ndarray, terminals: Terminals, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets, terminal ids) of terminals strictly closer than ``radius`` to each point."""
    tree = cKDTree(np.column_stack([terminals.x, terminals.y]))
    # query_ball_point includes the boundary (<= r); shrink r by an ulp to keep it strict.
    hits = tree.query_ball_point(
        np.column_stack([x, y]), r=np.nextafter(radius, 0), return_sorted=True
    )
    lengths = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((t for h in hits for t in h), dtype=np.int64, count=int(offsets[-1]))
    return offsets, flat


def make_customers(seed: int, n_customers: int, terminals: Terminals, radius: float) -> Customers:
    rng = stream(seed, STREAM_CUSTOMERS)
    xy = rng.uniform(0, 100, size=(n_customers, 2))
    mean_amount = rng.uniform(5, 100, size=n_customers)
    mean_nb_tx = rng.uniform(0, 4, size=n_customers)
    offsets, flat = terminals_within(xy[:, 0], xy[:, 1], terminals, radius)
    return Customers(
        x=xy[:, 0],
        y=xy[:, 1],
        mean_amount=mean_amount,
        std_amount=mean_amount / 2,
        mean_nb_tx_per_day=mean_nb_tx,
        offsets=offsets,
        terminals=flat,
    )
