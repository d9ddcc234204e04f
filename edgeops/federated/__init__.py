"""Federated training with Flower: FedAvg / FedProx rounds, client-level DP (DP-FedAvg), on the privacy ledger.

What comes from Flower (flwr 1.41, Message API): the ClientApp that trains on a client's partition, the server
strategies (FedAvg, FedProx), the DP wrapper that clips each client's update and adds Gaussian noise to the aggregate
(`DifferentialPrivacyServerSideFixedClipping`), its privacy accountant, and the round loop (`Strategy.start`).
What is ours: `LoopbackGrid`, the transport. It hands each message to the client's ClientApp in this process (the
simulated clients of the embedded default and the tests), checks every reply before the strategy sees it (shape,
dtype, finite values, size), and keeps a per-round report (who replied, update norms, who was clipped or rejected).
Flower's own Ray simulation engine and SuperLink deployment are not used: both need services or packages that the
embedded default must not require.

Privacy: with noise, each round is one Gaussian release of the average of the sampled clients' clipped updates
(noise std = z * C / sampled clients). The accountant composes the rounds without sampling amplification (Flower's
accounted mode), the ledger is charged before the first round, and dp-accounting's PLD accountant re-derives the
claim independently. With `secure_aggregation`, Flower's SecAgg+ workflow (legacy-strategy API, the one it runs in)
masks the updates: clipping moves to the clients (fixedclipping_mod) and the server adds noise to the unmasked sum.
The noise is secret: Flower draws it with numpy's global generator (`np.random.normal`), which edgeops replaces,
for the duration of a run, by an edgeops.noise stream (`secret_flower_noise`). Client sampling and the partition
stay seeded (public: the accountant claims no amplification from sampling). Each client's update norm, and whether
it was clipped, are un-noised facts about its data: they stay in the owner-only rounds file, never in MLflow.
"""

# What code outside the package imported from edgeops.federated when it was one module.
from edgeops.errors import FederatedError
from edgeops.federated.partitioning import dirichlet_partition
from edgeops.federated.stage import run_federated_training
from edgeops.federated.strategy import planned_epsilon, secret_flower_noise, train_federated
from edgeops.federated.transport import ClientBehaviour

__all__ = [
    "ClientBehaviour",
    "FederatedError",
    "dirichlet_partition",
    "planned_epsilon",
    "run_federated_training",
    "secret_flower_noise",
    "train_federated",
]
