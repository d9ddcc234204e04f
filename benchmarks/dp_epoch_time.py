"""DP-SGD time per epoch against non-private SGD, same model, batch size and data, interleaved in one process.

Usage: python benchmarks/dp_epoch_time.py [--repeats 7]
Writes benchmarks/results/dp_epoch_time.md. Goal (issue 3): DP <= 2x non-private per epoch.
Both loops sample batches the same way (Poisson for DP, shuffled batches of the same expected size otherwise) and
run one thread; the first epoch of each is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from _common import digits_training_data, write_table
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from opacus import PrivacyEngine

    from edgeops.training import new_model, plan_dp_training

    declaration, data, _ = digits_training_data()
    spec = declaration.spec
    torch.set_num_threads(1)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    dataset = torch.utils.data.TensorDataset(x, y)
    plan = plan_dp_training(spec, data)
    batch = spec.training.batch_size

    def plain_epoch_timer():
        model = new_model(spec, data)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True)
        criterion = nn.CrossEntropyLoss()

        def epoch() -> float:
            start = time.perf_counter()
            for xb, yb in loader:
                optimizer.zero_grad()
                criterion(model(xb), yb).backward()
                optimizer.step()
            return time.perf_counter() - start

        return epoch

    def dp_epoch_timer(mode: str):
        model = new_model(spec, data)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch)
        model, optimizer, loader = PrivacyEngine(accountant="prv").make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=mode,
        )
        criterion = nn.CrossEntropyLoss()

        def epoch() -> float:
            start = time.perf_counter()
            for xb, yb in loader:
                optimizer.zero_grad()
                if len(yb):
                    criterion(model(xb), yb).backward()
                optimizer.step()
            return time.perf_counter() - start

        return epoch

    declared = spec.training.grad_sample_mode
    timers = {
        "non-private SGD": plain_epoch_timer(),
        **{
            f"DP-SGD (opacus {mode}{', declared' if mode == declared else ''})": dp_epoch_timer(mode)
            for mode in ("ew", "hooks", "functorch")
        },
    }
    for timer in timers.values():
        timer()  # warm-up epoch
    samples = {name: [] for name in timers}
    for _ in range(args.repeats):
        for name, timer in random.sample(
            list(timers.items()), len(timers)
        ):  # interleaved, a new random order each round
            samples[name].append(timer())
    base = statistics.median(samples["non-private SGD"])
    rows = [
        {
            "loop": name,
            "epoch_s_median": statistics.median(v),
            "epoch_s_min": min(v),
            "epoch_s_max": max(v),
            "ratio_to_non_private": statistics.median(v) / base,
            "repeats": len(v),
        }
        for name, v in samples.items()
    ]
    write_table(
        "dp_epoch_time",
        rows,
        [
            f"digits CNN {spec.model.channels}, batch {batch}, {len(data.y_train)} training rows, 1 thread",
            "interleaved epochs (random order each round) after one warm-up each; goal: DP <= 2x non-private",
        ],
    )


if __name__ == "__main__":
    main()
