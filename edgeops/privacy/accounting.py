"""Privacy accounting beside the ledger: the independent epsilon re-derivation (dp-accounting), what one full run
will charge, and a second accountant (PLD) for each entry and for their composition, as the card shows them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeops.cards.record import Ledger, LedgerTotals
from edgeops.cards.record import LedgerEntry as CardLedgerEntry

if TYPE_CHECKING:
    from dp_accounting.pld.privacy_loss_distribution import PrivacyLossDistribution

    from edgeops.ledger import PrivacyLedger
    from edgeops.records.ledger import LedgerEntry, LedgerView
    from edgeops.spec import PipelineSpec

REDERIVATION_TOLERANCE = 0.05  # relative: PRV, PLD and RDP differ by discretisation and by RDP's looseness


# ---------------------------------------------------------------- independent re-derivation
def rederive_epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, method: str = "pld"
) -> float:
    """Epsilon of Poisson-subsampled Gaussian DP-SGD, computed with Google's dp-accounting (a second implementation,
    independent of Opacus)."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), int(steps)
    )
    accountant = pld_privacy_accountant.PLDAccountant() if method == "pld" else rdp_privacy_accountant.RdpAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def verify_claim(privacy: dict[str, Any], tolerance: float = REDERIVATION_TOLERANCE) -> dict[str, Any]:
    """Re-derive from the recorded (noise multiplier, sample rate, steps, delta); pass if within the tolerance."""
    method = "rdp" if privacy["accountant"] == "rdp" else "pld"
    rederived = rederive_epsilon(
        privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"], privacy["delta"], method
    )
    claimed = float(privacy["claimed_epsilon"])
    passed = rederived <= claimed * (1 + tolerance)
    return {
        "claimed_epsilon": claimed,
        "rederived_epsilon": rederived,
        "method": f"dp-accounting {method.upper()}",
        "tolerance": tolerance,
        "passed": bool(passed),
        "summary": f"claimed epsilon {claimed:.4f}, re-derived {rederived:.4f} with dp-accounting {method.upper()} "
        f"({'within' if passed else 'beyond'} {tolerance:.0%})",
    }


# ---------------------------------------------------------------- what one full run will spend
def run_charges(spec: PipelineSpec) -> list[dict[str, Any]]:
    """Every charge one full run of the declaration makes (a retrain after drift included): DP statistics when the
    bounds are not public, DP-SGD and/or DP-FedAvg, the DP baseline, and each target's DP fine-tuning and distillation.
    Each is {"step", "epsilon", "delta"}; deltas are the declaration's per-mechanism delta."""
    from edgeops.spec import DistillStep, PruneStep

    delta = spec.mechanism_delta
    charges = []
    if spec.dataset.needs_dp_statistics:
        charges.append({"step": "dp statistics (quantiles)", "epsilon": spec.privacy.statistics_epsilon, "delta": 0.0})
    if spec.training.mode in ("central", "both"):
        charges.append({"step": "dp-sgd training", "epsilon": spec.privacy.training_epsilon, "delta": delta})
    if spec.training.mode in ("federated", "both"):
        from edgeops.federated.strategy import planned_epsilon

        charges.append(
            {"step": "dp-fedavg training", "epsilon": planned_epsilon(spec.training.federated, delta), "delta": delta}
        )
    if spec.privacy.baseline_epsilon > 0:
        charges.append({"step": "dp baseline", "epsilon": spec.privacy.baseline_epsilon, "delta": 0.0})
    for target in spec.targets:
        for step in target.recipe:
            if isinstance(step, PruneStep) and step.finetune is not None:
                charges.append(
                    {"step": f"{target.name}: dp fine-tuning", "epsilon": step.finetune.epsilon, "delta": delta}
                )
            elif isinstance(step, DistillStep):
                charges.append({"step": f"{target.name}: dp distillation", "epsilon": step.epsilon, "delta": delta})
    return charges


def run_refusal(spec: PipelineSpec, ledger: PrivacyLedger) -> str | None:
    """Why the ledger cannot pay for one more full run (with every step's numbers), or None when it can."""
    charges = run_charges(spec)
    epsilon, delta = sum(c["epsilon"] for c in charges), sum(c["delta"] for c in charges)
    reason = ledger.refusal("retraining", epsilon, delta)
    if reason is None:
        return None
    steps = "; ".join(f"{c['step']} epsilon {c['epsilon']:g} delta {c['delta']:g}" for c in charges)
    return f"{reason.replace('; nothing was run', '')} (every step it would charge: {steps})"


# ---------------------------------------------------------------- a second accountant beside the basic sum
PLD_DISCRETIZATION = 1e-3  # dp-accounting's value discretization; pessimistic, so the figure stays an upper bound
GAUSSIAN_KEYS = ("noise_multiplier", "sample_rate", "steps")


def _is_gaussian(part: dict[str, Any]) -> bool:
    return all(part.get(k) is not None for k in GAUSSIAN_KEYS) and float(part["noise_multiplier"]) > 0


def _part_pld(part: dict[str, Any]) -> PrivacyLossDistribution:
    from dp_accounting.pld import common
    from dp_accounting.pld import privacy_loss_distribution as pld

    if _is_gaussian(
        part
    ):  # Poisson-subsampled Gaussian (DP-SGD, fine-tuning, distillation; DP-FedAvg with rate 1), add/remove
        single = pld.from_gaussian_mechanism(
            standard_deviation=float(part["noise_multiplier"]),
            sensitivity=1.0,
            sampling_prob=float(part["sample_rate"]),
            value_discretization_interval=PLD_DISCRETIZATION,
            pessimistic_estimate=True,
            use_connect_dots=True,
        )
        return single.self_compose(int(part["steps"]))
    # A pure epsilon-DP mechanism (quantiles, the diffprivlib baseline): the dominating PLD of any (epsilon, delta)-DP
    # one.
    return pld.from_privacy_parameters(
        common.DifferentialPrivacyParameters(float(part["epsilon"]), float(part.get("delta", 0.0))),
        value_discretization_interval=PLD_DISCRETIZATION,
    )


def pld_composed_epsilon(parts: list[dict[str, Any]], delta: float) -> float | None:
    """Epsilon at `delta` of the adaptive composition of `parts` by privacy loss distributions (dp-accounting,
    pessimistic
    discretisation): each part is a Gaussian mechanism {noise_multiplier, sample_rate, steps} or an epsilon-DP one
    {epsilon}. Sound wherever the basic sum is, and tighter. None when nothing was spent."""
    spent = [p for p in parts if _is_gaussian(p) or float(p.get("epsilon") or 0) > 0]
    if not spent:
        return None
    total = _part_pld(spent[0])
    for part in spent[1:]:
        total = total.compose(_part_pld(part))
    return float(total.get_epsilon_for_delta(delta))


def second_accountant(entry: LedgerEntry) -> dict[str, Any] | None:
    """For a Gaussian (DP-SGD-like) ledger entry: its epsilon by dp-accounting's PLD accountant, beside the declared
    accountant's figure the ledger charged. None for other entries (pure epsilon-DP: nothing to re-account)."""
    parameters = entry.parameters
    if not _is_gaussian(parameters):
        return None
    epsilon = rederive_epsilon(
        float(parameters["noise_multiplier"]),
        float(parameters["sample_rate"]),
        int(parameters["steps"]),
        entry.delta,
        "pld",
    )
    return {
        "method": "dp-accounting PLD (Poisson-subsampled Gaussian)",
        "epsilon": epsilon,
        "delta": entry.delta,
        "declared_accountant": str(parameters.get("accountant", "")).upper(),
        "declared_epsilon": entry.epsilon,
    }


def card_ledger(view: LedgerView) -> Ledger:
    """The ledger as the card shows it: every entry, the totals against the budget, the composition rule, a second
    accountant's figure for each DP-SGD entry and a PLD composition of all entries beside the basic sum."""
    entries = [
        CardLedgerEntry(
            id=entry.id,
            mechanism=entry.mechanism,
            status=entry.status,
            epsilon=entry.epsilon,
            delta=entry.delta,
            charge_key=entry.charge_key,
            note=entry.note,
            mechanism_parameters={
                k: entry.parameters.get(k)
                for k in (*GAUSSIAN_KEYS, "accountant")
                if entry.parameters.get(k) is not None
            },
            second_accountant=second_accountant(entry),
        )
        for entry in view.entries
    ]
    parts = [{**e.mechanism_parameters, "epsilon": e.epsilon, "delta": e.delta} for e in entries]
    spent_delta = float(view.spent_delta)
    pld = pld_composed_epsilon(parts, spent_delta) if spent_delta > 0 else None
    return Ledger(
        composition=view.composition,
        entries=entries,
        totals=LedgerTotals(
            epsilon=view.spent_epsilon,
            delta=spent_delta,
            budget_epsilon=view.budget_epsilon,
            budget_delta=view.budget_delta,
            remaining_epsilon=view.remaining_epsilon,
            remaining_delta=view.remaining_delta,
        ),
        pld_composition={
            "epsilon": pld,
            "delta": spent_delta,
            "method": "dp-accounting PLD: every entry's mechanism composed (Gaussian entries from their noise, "
            "sampling "
            "rate and steps; epsilon-DP entries as (epsilon, 0)); reported beside the basic sum, which is "
            "what the budget is enforced on",
        }
        if pld is not None
        else None,
    )
