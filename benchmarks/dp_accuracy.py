"""DP-SGD test accuracy on digits at epsilon 1 and 3 (delta 1e-5) beside the non-private reference.

Usage: python benchmarks/dp_accuracy.py [--grid]   (--grid also sweeps a few hyperparameters; slower)
Writes benchmarks/results/dp_accuracy.md. Seeds 0..2 per setting; the median is reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import digits_training_data, write_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    from edgeops.training import evaluate_logits, plan_dp_training, predict_logits, train_dp, train_nonprivate

    declaration, data, _ = digits_training_data()
    spec = declaration.spec
    base = spec.training
    settings = [dict()]
    if args.grid:
        settings = [dict(), dict(batch_size=512, epochs=60, learning_rate=4.0), dict(batch_size=512, epochs=60, learning_rate=4.0, max_grad_norm=0.5),
                    dict(batch_size=1024, epochs=100, learning_rate=4.0), dict(channels=[8, 16], batch_size=512, epochs=60, learning_rate=4.0),
                    dict(mlp=[32], batch_size=512, epochs=60, learning_rate=2.0), dict(mlp=[32], batch_size=256, epochs=40, learning_rate=1.0),
                    dict(mlp=[32], batch_size=512, epochs=60, learning_rate=4.0, max_grad_norm=0.3)]
    rows = []
    for epsilon in (1.0, 3.0):
        for setting in settings:
            setting = dict(setting)
            model = spec.model.model_copy(update={"channels": setting.pop("channels")}) if "channels" in setting else spec.model
            if "mlp" in setting:  # the same images through a one-hidden-layer MLP: fewer parameters, less noise in total
                model = spec.model.model_copy(update={"family": "mlp", "hidden": setting.pop("mlp")})
            accuracies, seconds = [], []
            for seed in range(args.seeds):
                candidate = spec.model_copy(update={
                    "model": model,
                    "privacy": spec.privacy.model_copy(update={"training_epsilon": epsilon}),
                    "training": base.model_copy(update={**setting, "seed": seed})})
                plan = plan_dp_training(candidate, data)
                result = train_dp(candidate, data, plan, Path(tempfile.mkdtemp()))
                accuracies.append(evaluate_logits(predict_logits(result["model"], data.x_test), data.y_test, len(data.classes))["accuracy"])
                seconds.append(result["seconds"])
            shape = f" channels={model.channels}" if model.family == "cnn" else f" mlp hidden={model.hidden}"
            rows.append({"model": f"dp-sgd eps={epsilon:g}", "setting": str(setting or "declared") + shape,
                         "noise_multiplier": round(plan.noise_multiplier, 3), "test_accuracy_median": statistics.median(accuracies),
                         "min": min(accuracies), "max": max(accuracies), "train_s_median": statistics.median(seconds)})
            print(rows[-1], flush=True)
    reference = [evaluate_logits(predict_logits(train_nonprivate(spec.model_copy(update={"training": base.model_copy(update={"seed": s})}), data),
                                                data.x_test), data.y_test, len(data.classes))["accuracy"] for s in range(args.seeds)]
    rows.append({"model": "non-private reference (never released)", "setting": "adam lr 3e-3, batch 64", "test_accuracy_median": statistics.median(reference),
                 "min": min(reference), "max": max(reference)})
    write_table("dp_accuracy", rows, [f"digits, delta={spec.privacy.delta:g}, {len(data.y_train)} training rows, test n={len(data.y_test)}",
                                      f"seeds 0..{args.seeds - 1}; goals: eps=3 >= 95%, eps=1 >= 88%"])


if __name__ == "__main__":
    main()
