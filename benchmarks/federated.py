"""Federated training on digits: FedAvg across simulated non-IID clients against central training, and DP-FedAvg at
client-level epsilons.

Usage: python benchmarks/federated.py [--seeds 3]
Writes benchmarks/results/federated.md. Goal (issue 11): 10 simulated clients with Dirichlet(0.5) label skew,
non-private FedAvg within 2 points of central non-private training; client-level DP accuracy reported beside it.

Central: edgeops.training.train_nonprivate (same model, Adam, 40 epochs on the pooled training split).
Federated: edgeops.federated.train_federated (Flower FedAvg, the declaration's defaults: 60 rounds, 2 local epochs of
SGD, every client each round). Both are evaluated on the same held-out test split; seeds interleaved central/federated.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _common import ROOT, digits_training_data, write_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    from edgeops.federated import train_federated
    from edgeops.training import evaluate_logits, predict_logits, train_nonprivate

    declaration, data, _ = digits_training_data()
    spec = declaration.spec

    def with_federated(seed: int, **changes):
        fed = spec.training.federated.model_copy(update={"seed": seed, **changes})
        return spec.model_copy(update={"training": spec.training.model_copy(update={"seed": seed, "federated": fed})})

    def accuracy(model) -> float:
        return evaluate_logits(predict_logits(model, data.x_test), data.y_test, len(data.classes))["accuracy"]

    rows = []
    for seed in range(args.seeds):  # interleaved: central, federated, central, federated ...
        started = time.perf_counter()
        rows.append(
            {
                "setting": "central, non-private",
                "seed": seed,
                "test_accuracy": accuracy(train_nonprivate(with_federated(seed), data)),
                "seconds": time.perf_counter() - started,
            }
        )
        result = train_federated(with_federated(seed), data)
        rows.append(
            {
                "setting": "FedAvg 10 clients alpha 0.5, non-private",
                "seed": seed,
                "test_accuracy": accuracy(result["model"]),
                "seconds": result["seconds"],
                "partition_sizes": result["partition_sizes"],
            }
        )
    secure = train_federated(with_federated(0, secure_aggregation=True), data)
    secure_row = {
        "setting": "FedAvg + SecAgg+ 10 clients alpha 0.5, non-private",
        "seed": 0,
        "test_accuracy": accuracy(secure["model"]),
        "seconds": secure["seconds"],
    }
    dp_rows = [secure_row]
    for clients, noise in ((10, 1.0), (10, 0.3), (100, 1.0)):
        spec_dp = with_federated(0, clients=clients, noise_multiplier=noise, clipping_norm=2.0)
        result = train_federated(spec_dp, data)
        clipped = sum(sum(1 for c in r["clients"].values() if c.get("clipped")) for r in result["rounds"])
        updates = sum(len(r["clients"]) for r in result["rounds"])
        dp_rows.append(
            {
                "setting": f"DP-FedAvg {clients} clients alpha 0.5, z={noise}, C=2.0",
                "seed": 0,
                "test_accuracy": accuracy(result["model"]),
                "seconds": result["seconds"],
                "client_level_epsilon": result["epsilon"],
                "delta": spec.mechanism_delta,
                "clipped_share": round(clipped / updates, 3),
            }
        )
    central = statistics.median(r["test_accuracy"] for r in rows if r["setting"].startswith("central"))
    federated = statistics.median(r["test_accuracy"] for r in rows if r["setting"].startswith("FedAvg"))
    gap = 100 * (central - federated)
    summary = {
        "setting": "median over seeds: central - federated (points)",
        "test_accuracy": round(gap, 2),
        "goal": "<= 2",
        "met": gap <= 2,
    }
    notes = [
        f"{args.seeds} seeds; splits as the pipeline makes them (train {len(data.y_train)}, test {len(data.y_test)} "
        "rows).",
        "DP-FedAvg: Flower's server-side fixed clipping, noise std z*C/sampled clients on the average, epsilon from "
        "Flower's RDP "
        "accountant without sampling amplification (all clients every round), delta from the declaration. The privacy "
        "unit is a whole client: with 10 clients the noise swamps the signal; client-level DP needs many clients.",
        "SecAgg+: Flower's SecAggPlusWorkflow over the same in-process transport (masked, quantized updates; the "
        "server sees only the sum).",
        "Shared 2-core machine, 1 torch thread.",
    ]
    write_table("federated", [*rows, summary, *dp_rows], notes)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
