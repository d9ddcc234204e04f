"""DP-SGD test accuracy on digits at epsilon 1 and 3 (delta 1e-5) beside the non-private reference.

Usage: python benchmarks/dp_accuracy.py [--grid]   (--grid also sweeps a few hyperparameters; slower)
Writes benchmarks/results/dp_accuracy.md. Seeds 0..4 per setting; the median is reported. The declared setting
(public pre-training on edgeops.synthetic digits, then DP-SGD) is measured beside DP-SGD from random weights.
The declared hyperparameters were chosen on the validation split; this table reports the test split.
The DP noise and Poisson sampling are secret (edgeops.noise, a fresh os.urandom secret per run): the seeds vary only
the public randomness (initialisation; the pre-training has its own seed), and a rerun gives other numbers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import PRETRAINED_CACHE, digits_training_data, write_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    from edgeops.training import (
        cached_pretraining,
        evaluate_logits,
        plan_dp_training,
        predict_logits,
        train_dp,
        train_nonprivate,
    )

    declaration, data, _ = digits_training_data()
    spec = declaration.spec
    base = spec.training
    # Per epsilon, the hyperparameters chosen on the validation split (5 seeds each, development runs): epsilon 3 is the
    # declaration; epsilon 1 trains 20 epochs at learning rate 10 (at the declared clipping norm 0.1), batch 256: the
    # declared 40 epochs would need far more noise.
    tuned = {3.0: dict(), 1.0: dict(epochs=20, learning_rate=10.0, batch_size=256)}
    settings = None
    if args.grid:
        # the clipping sweep behind the declared norm (learning rate x norm held at 2.0), then epochs and model shape
        settings = [
            dict(),
            dict(max_grad_norm=1.0, learning_rate=2.0),
            dict(max_grad_norm=0.3, learning_rate=6.0),
            dict(epochs=20, learning_rate=30.0),
            dict(epochs=60),
            dict(channels=[16, 32]),
            dict(mlp=[32], epochs=60, learning_rate=20.0),
            dict(mlp=[32], batch_size=256, epochs=40, learning_rate=10.0),
        ]
    rows, pretrained = [], {}
    for epsilon in (1.0, 3.0):
        for setting in settings or [tuned[epsilon], {**tuned[epsilon], "pretrain": None}]:
            setting = dict(setting)
            model = (
                spec.model.model_copy(update={"channels": setting.pop("channels")})
                if "channels" in setting
                else spec.model
            )
            if (
                "mlp" in setting
            ):  # the same images through a one-hidden-layer MLP: fewer parameters, less noise in total
                model = spec.model.model_copy(update={"family": "mlp", "hidden": setting.pop("mlp")})
            accuracies, seconds = [], []
            for seed in range(args.seeds):
                candidate = spec.model_copy(
                    update={
                        "model": model,
                        "privacy": spec.privacy.model_copy(update={"training_epsilon": epsilon}),
                        "training": base.model_copy(update={**setting, "seed": seed}),
                    }
                )
                plan = plan_dp_training(candidate, data)
                # the pre-trained weights are the same for every seed (the pre-training has its own seed): DP-SGD varies
                initial = None
                if candidate.training.pretrain:
                    initial, record = cached_pretraining(
                        candidate, data, PRETRAINED_CACHE
                    )  # a fresh copy on every call
                    pretrained[record["weights_sha256"]] = record
                result = train_dp(candidate, data, plan, Path(tempfile.mkdtemp()), initial_model=initial)
                accuracies.append(
                    evaluate_logits(predict_logits(result["model"], data.x_test), data.y_test, len(data.classes))[
                        "accuracy"
                    ]
                )
                seconds.append(result["seconds"])
            shape = f" channels={model.channels}" if model.family == "cnn" else f" mlp hidden={model.hidden}"
            start = (
                "declared: public pre-training, then DP-SGD"
                if candidate.training.pretrain
                else "DP-SGD from random weights"
            )
            label = {k: v for k, v in setting.items() if k != "pretrain"}
            rows.append(
                {
                    "model": f"dp-sgd eps={epsilon:g}",
                    "setting": start + (f" {label}" if label else "") + shape,
                    "noise_multiplier": round(plan.noise_multiplier, 3),
                    "test_accuracy_median": statistics.median(accuracies),
                    "min": min(accuracies),
                    "max": max(accuracies),
                    "train_s_median": statistics.median(seconds),
                    "per_seed": " ".join(f"{a:.4f}" for a in accuracies),
                }
            )
            print(rows[-1], flush=True)
    for record in pretrained.values():
        rows.append(
            {
                "model": "public pre-training only (no private data, no DP-SGD)",
                "setting": f"{record['samples']} synthetic digits, {record['epochs']} epochs, seed {record['seed']}",
                "test_accuracy_median": record["test_accuracy_before_dp"],
                "train_s_median": record["seconds"],
            }
        )
    reference = [
        evaluate_logits(
            predict_logits(
                train_nonprivate(spec.model_copy(update={"training": base.model_copy(update={"seed": s})}), data),
                data.x_test,
            ),
            data.y_test,
            len(data.classes),
        )["accuracy"]
        for s in range(args.seeds)
    ]
    rows.append(
        {
            "model": "non-private reference (never released)",
            "setting": "adam lr 3e-3, batch 64",
            "test_accuracy_median": statistics.median(reference),
            "min": min(reference),
            "max": max(reference),
        }
    )
    write_table(
        "dp_accuracy",
        rows,
        [
            f"digits, delta={spec.mechanism_delta:g} per run, {len(data.y_train)} training rows, test "
            f"n={len(data.y_test)}",
            f"seeds 0..{args.seeds - 1} (public randomness); DP noise and sampling secret (edgeops.noise, fresh per "
            "run); "
            "goals: eps=3 >= 95%, eps=1 >= 88%; with secret noise within 1 point of the seeded medians 95.3% / 91.4%",
        ],
    )


if __name__ == "__main__":
    main()
