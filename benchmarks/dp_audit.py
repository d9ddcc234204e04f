"""The one-run canary audit (edgeops.audit) on the declared DP settings and on a noise-off control.

Usage: python benchmarks/dp_audit.py [--trials N] [--canaries M] [--strong-trials N] [--canary gradient|input]
Writes benchmarks/results/dp_audit.md. Each trial is one audit: a DP-SGD run with the declared model and settings on
public data of the declared training size with M canaries (each in with probability 1/2; white-box gradient canaries
by default, canary rows with --canary input), and the same run with
the noise switched off (noise multiplier 0, clipping on). No private row is read: the data are public synthetic, so the
audit costs no privacy budget. Two configurations:
- "digits (declared)": pipelines/digits.yaml as declared (public pre-training, CNN, batch 512, clip 0.1, lr 20).
- "strong influence": the digits declaration with settings where one row moves the model a lot (MLP, batch 50, clip
  1.0, lr 5, 60 epochs, epsilon 1): the configuration of tests/unit/test_dp_audit.py, where the attack has power.
Trials differ in the audit seed (canaries, filler, inclusion).
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import PRETRAINED_CACHE, digits_training_data, write_table


def strong_influence(spec):
    training = spec.training.model_copy(
        update={
            "epochs": 60,
            "batch_size": 50,
            "learning_rate": 5.0,
            "max_grad_norm": 1.0,
            "pretrain": None,
            "accountant": "rdp",
        }
    )
    model = spec.model.model_copy(update={"family": "mlp", "hidden": [128]})
    return spec.model_copy(
        update={
            "training": training,
            "model": model,
            "privacy": spec.privacy.model_copy(update={"training_epsilon": 1.0}),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=2, help="audits of the declared digits settings")
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--strong-trials", type=int, default=3)
    parser.add_argument("--strong-canaries", type=int, default=200)
    parser.add_argument("--strong-rows", type=int, default=400)
    parser.add_argument("--canary", choices=["gradient", "input"], default="gradient")
    args = parser.parse_args()

    from edgeops.audit import run_canary_audit

    declaration, data, _ = digits_training_data()
    spec = declaration.spec
    configurations = [
        ("digits (declared)", spec, len(data.y_train), args.canaries, args.trials),
        ("strong influence", strong_influence(spec), args.strong_rows, args.strong_canaries, args.strong_trials),
    ]
    rows = []
    started = time.perf_counter()
    for name, config, n_train, canaries, trials in configurations:
        results = []
        for seed in range(trials):
            result = run_canary_audit(
                config,
                data.features,
                data.classes,
                n_train=n_train,
                canaries=canaries,
                canary=args.canary,
                seed=seed,
                pretrained_cache=PRETRAINED_CACHE,
            )
            results.append(result)
            print(name, seed, result.summary, flush=True)
        for result, seed in zip(results, range(trials), strict=False):
            rows.append(
                {
                    "configuration": name,
                    "trial (audit seed)": seed,
                    "canary": result.canary,
                    "claimed epsilon": result.claimed_epsilon,
                    "noise multiplier": round(result.noise_multiplier, 3),
                    "canaries": result.canaries,
                    "training rows": result.training_rows,
                    "lower bound, declared noise": round(result.epsilon_lower_bound, 3),
                    "lower bound, noise off": round(result.control_epsilon_lower_bound, 3),
                    "max detectable": round(result.max_detectable_epsilon, 3),
                    "outcome": result.outcome,
                    "noise-off run": "violated"
                    if result.control_epsilon_lower_bound > result.claimed_epsilon
                    else "not caught",
                    "seconds (both runs)": round(result.seconds, 1),
                }
            )
        rows.append(
            {
                "configuration": f"{name}: median over {trials}",
                "claimed epsilon": results[0].claimed_epsilon,
                "lower bound, declared noise": round(statistics.median(r.epsilon_lower_bound for r in results), 3),
                "lower bound, noise off": round(statistics.median(r.control_epsilon_lower_bound for r in results), 3),
                "max detectable": round(results[0].max_detectable_epsilon, 3),
                "outcome": ", ".join(
                    f"{o} x{sum(r.outcome == o for r in results)}" for o in dict.fromkeys(r.outcome for r in results)
                ),
            }
        )
    from edgeops.hil.harness import device_facts

    facts = device_facts()
    cpu = f"{facts['cpu_model']}, {facts['cores']} cores, ISA {' '.join(facts['isa_flags']) or 'baseline'}"
    notes = [
        f"method: {results[0].method}; score: {results[0].score}",
        f"canaries: {results[0].canary_design}",
        "confidence 95%, significance split (Bonferroni) over the guess counts k = 5, 10, 20, 30, 50% of the canaries "
        "per side",
        "lower bound: the largest epsilon the correct guesses reject; max detectable: the bound if every guess were "
        "right",
        "outcome: violated if the declared-noise bound > claim; underpowered if max detectable <= claim or the same "
        "attack's bound on the noise-off run <= claim (it could not catch a known violation); else consistent",
        "private rows read: 0 (public synthetic data; no privacy budget spent)",
        f"total {time.perf_counter() - started:.0f} s under `nice -n 10` on a shared machine ({cpu}), one torch thread",
        f"command: nice -n 10 .venv/bin/python benchmarks/dp_audit.py --trials {args.trials} --canaries "
        f"{args.canaries} --strong-trials {args.strong_trials} --canary {args.canary}",
    ]
    write_table("dp_audit", rows, notes)


if __name__ == "__main__":
    main()
