"""DP-SGD step time by Opacus per-sample-gradient mode against non-private SGD, on the MobileNet-class model
(pipelines/examples/digits32_mobilenet.yaml), same batch, same data, interleaved.

Usage: python benchmarks/dp_grad_sample_modes.py [--rounds 5] [--batch N] [--steps 1] [--modes a,b] [--out NAME]
Writes benchmarks/results/dp_grad_sample_modes.md (or --out NAME). Goal (issue 23): DP-SGD <= 1.5x non-private.

Modes (Opacus 1.6): hooks (module hooks), ew (torch's expanded weights), functorch (vmap per-sample gradients),
ghost (fast gradient clipping: per-sample gradient norms without per-sample gradients, two backward passes).
Each round visits the modes in a new random order and times `--steps` optimizer steps of each on the same fixed
batch (no sampling cost), one thread, after one warm-up step. Exactness: with noise 0 and lr 0, each mode's clipped,
averaged gradient on 16 rows is compared with the definition computed one row at a time by plain autograd (relative
L2 difference); a mode is exact when it is < 1e-4.
hooks uses edgeops's depthwise rule (edgeops/training/grad_samplers.py); hooks_generic is hooks with Opacus's own
convolution rule for the depthwise layers too, which forms every channel pair and keeps the diagonal.
The ratio is the median over rounds of (mode step time / non-private step time in the same round).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from _common import write_table
from realistic_int8 import example_data
from torch import nn

MODES = ("nonprivate", "hooks", "hooks_generic", "ew", "functorch", "ghost")


def make_step(mode: str, spec, data, x: torch.Tensor, y: torch.Tensor, noise: float = 1.0, lr: float = 0.01):
    """A function that runs one optimizer step of `mode` on (x, y); also returns the model (for the exactness check)."""
    from opacus import PrivacyEngine

    from edgeops.models import DepthwiseConv2d
    from edgeops.training import new_model
    from edgeops.training.grad_samplers import register_grad_samplers

    register_grad_samplers()
    torch.manual_seed(0)
    model = new_model(spec, data).train()
    if mode == "hooks_generic":  # Opacus's own convolution rule for the depthwise layers too (what hooks was before)
        for module in model.modules():
            if isinstance(module, DepthwiseConv2d):
                module.__class__ = nn.Conv2d
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    if mode != "nonprivate":
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(x))
        engine = PrivacyEngine(accountant="prv")
        made = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise,
            max_grad_norm=1.0,
            poisson_sampling=False,
            grad_sample_mode="hooks" if mode == "hooks_generic" else mode,
            criterion=criterion,
        )
        if mode == "ghost":
            model, optimizer, criterion, _ = made
        else:
            model, optimizer, _ = made

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        optimizer.step()

    return step, optimizer


def per_row_reference(spec, data, x: torch.Tensor, y: torch.Tensor, max_grad_norm: float = 1.0) -> torch.Tensor:
    """The definition, one row at a time with plain autograd: the mean of each row's gradient clipped to the norm."""
    from edgeops.training import new_model

    torch.manual_seed(0)
    model = new_model(spec, data).train()
    criterion = nn.CrossEntropyLoss()
    clipped = []
    for row in range(len(x)):
        model.zero_grad(set_to_none=True)
        criterion(model(x[row : row + 1]), y[row : row + 1]).backward()
        gradient = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        clipped.append(gradient * min(1.0, max_grad_norm / (float(gradient.norm()) + 1e-6)))
    return torch.stack(clipped).mean(dim=0)


def averaged_gradient(optimizer) -> torch.Tensor:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return torch.cat([p.grad.detach().reshape(-1) for p in params if p.grad is not None])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="default: the declaration's training.batch_size")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset (nonprivate is always run)")
    parser.add_argument("--out", default="dp_grad_sample_modes", help="results table name under benchmarks/results")
    args = parser.parse_args()
    wanted = ["nonprivate", *[m for m in MODES[1:] if m in args.modes.split(",")]]
    torch.set_num_threads(1)
    declaration, data, _ = example_data()
    spec = declaration.spec
    batch = args.batch or spec.training.batch_size
    x, y = torch.from_numpy(data.x_train[:batch]), torch.from_numpy(data.y_train[:batch])

    errors, exact = {}, {}
    small_x, small_y = x[:16], y[:16]
    reference = per_row_reference(spec, data, small_x, small_y)
    for mode in wanted[1:]:
        try:
            step, optimizer = make_step(mode, spec, data, small_x, small_y, noise=0.0, lr=0.0)
            step()
            gradient = averaged_gradient(optimizer)
            exact[mode] = float((gradient - reference).norm() / reference.norm())
        except Exception as err:  # a mode that does not support a layer says so in the table
            errors[mode] = f"{type(err).__name__}: {str(err)[:160]}"
    modes = [m for m in wanted if m not in errors]
    steps = {}
    for mode in modes:
        steps[mode] = make_step(mode, spec, data, x, y)[0]
        steps[mode]()  # warm-up
    seconds = {m: [] for m in modes}
    rng = random.Random()  # public randomness: the visiting order only
    for round_index in range(args.rounds):
        order = modes[:]
        rng.shuffle(order)
        for mode in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[mode]()
            seconds[mode].append((time.perf_counter() - start) / args.steps)
        print(
            f"round {round_index + 1}/{args.rounds}: " + ", ".join(f"{m} {seconds[m][-1]:.2f}s" for m in modes),
            flush=True,
        )
    rows = []
    for mode in wanted:
        if mode in errors:
            rows.append(
                {"mode": mode, "step_s_median": "not run", "ratio_vs_nonprivate": "", "exact": "", "note": errors[mode]}
            )
            continue
        ratio = (
            statistics.median(s / n for s, n in zip(seconds[mode], seconds["nonprivate"], strict=False))
            if mode != "nonprivate"
            else 1.0
        )
        rows.append(
            {
                "mode": mode,
                "step_s_median": round(statistics.median(seconds[mode]), 3),
                "ratio_vs_nonprivate": round(ratio, 3),
                "exact": ""
                if mode == "nonprivate"
                else f"{exact[mode] < 1e-4} (rel. diff vs per-row autograd {exact[mode]:.1e})",
                "note": "",
            }
        )
    candidates = [r for r in rows if r["mode"] != "nonprivate" and r["exact"].startswith("True")]
    fastest = min(candidates, key=lambda r: r["ratio_vs_nonprivate"]) if candidates else None
    notes = [
        f"Model: pipelines/examples/{declaration.file.name} ({spec.model.family}, width {spec.model.width_multiplier}, "
        f"{spec.model.resolution}x{spec.model.resolution}); "
        f"batch {batch} rows of the training split, fixed; {args.rounds} rounds x {args.steps} step(s), modes in a new "
        "random order each round; "
        "one thread; noise multiplier 1.0, clipping norm 1.0 (the noise draw is part of each DP step).",
        f"Fastest exact mode: {fastest['mode']} at {fastest['ratio_vs_nonprivate']}x non-private (goal <= 1.5x: "
        f"{'met' if fastest['ratio_vs_nonprivate'] <= 1.5 else 'MISSED'})"
        if fastest
        else "No exact mode ran.",
    ]
    write_table(args.out, rows, notes)


if __name__ == "__main__":
    main()
