"""Client data splits: the training split partitioned among the simulated clients (non-IID label skew)."""

from __future__ import annotations

import numpy as np

from edgeops.errors import FederatedError


def dirichlet_partition(
    labels: np.ndarray, clients: int, alpha: float, seed: int, min_size: int = 2
) -> list[np.ndarray]:
    """Non-IID label skew: each class is split among clients by Dirichlet(alpha) proportions. Redrawn (seeded) until
    every client holds at least `min_size` rows."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for cls in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == cls))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha))) * len(rows)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(rows, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise FederatedError(
        f"could not give each of {clients} clients {min_size} rows with alpha {alpha} ({len(labels)} rows)"
    )
