"""The one-run canary audit (edgeops.audit): its statistics against hand-computed cases, and an audit that fails a
training run with the noise switched off."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import digits_declaration
from scipy.stats import binom

from edgeops.audit import (
    CanaryAuditResult,
    audit_scores,
    epsilon_lower_bound,
    guess_counts,
    one_run_p_value,
    outcome_for,
    run_canary_audit,
)
from edgeops.spec import PipelineSpec

FEATURES = [f"pixel_{i}" for i in range(64)]


# ---------------------------------------------------------------- statistics
def test_p_value_without_delta_is_the_binomial_tail():
    # 8 right out of 10 at epsilon = log 3: q = 3/4, P[B >= 8] = sum_{k=8..10} C(10,k) .75^k .25^(10-k)
    by_hand = sum(math.comb(10, k) * 0.75**k * 0.25 ** (10 - k) for k in (8, 9, 10))
    assert one_run_p_value(100, 10, 8, math.log(3), 0.0) == pytest.approx(by_hand, rel=1e-12)


def test_delta_adds_twice_m_delta_times_the_largest_average_just_below_v():
    m, r, v, eps, delta = 50, 10, 8, 1.0, 1e-3
    q = 1 / (1 + math.exp(-eps))
    alpha = max(sum(binom.pmf(v - j, r, q) for j in range(1, i + 1)) / i for i in range(1, v + 1))
    expected = binom.sf(v - 1, r, q) + alpha * delta * 2 * m
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(expected, rel=1e-12)
    assert one_run_p_value(m, r, v, eps, delta) > one_run_p_value(m, r, v, eps, 0.0)


def test_all_guesses_right_give_the_closed_form_maximum():
    # v = r: the p-value is q^r, so the bound solves q = 0.05^(1/r), epsilon = log(q / (1 - q))
    for r in (10, 100, 400):
        q = 0.05 ** (1 / r)
        assert epsilon_lower_bound(1000, r, r, 0.0, 0.05) == pytest.approx(math.log(q / (1 - q)), abs=1e-6)
    assert epsilon_lower_bound(1000, 100, 100, 0.0, 0.05) == pytest.approx(3.493, abs=1e-3)  # hand: q = .97049, 3.493


def test_chance_level_guesses_prove_nothing():
    assert epsilon_lower_bound(1000, 100, 50, 1e-5, 0.05) == 0.0
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    lower, most, _ = audit_scores(rng.normal(size=1000), included, 1e-5)
    assert lower < 0.3  # random scores: ~0
    assert most > 4.5  # what 1,000 canaries could prove (k up to 300 per side: about half are in, not exactly 500)


def test_perfect_scores_reach_the_maximum_and_the_maximum_is_the_all_right_bound():
    included = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    lower, most, guesses = audit_scores(included.astype(float), included, 1e-5)
    assert lower == pytest.approx(most)
    significance = 0.05 / len(guess_counts(1000))
    assert most == pytest.approx(epsilon_lower_bound(1000, 1000, 1000, 1e-5, significance))
    assert all(g.correct == g.guesses for g in guesses)


def test_the_maximum_counts_only_guess_counts_that_the_inclusion_allows_all_right():
    included = np.r_[np.ones(300, bool), np.zeros(700, bool)]  # 300 in: no k above 300 per side can be all right
    _, most, _ = audit_scores(included.astype(float), included, 1e-5)
    significance = 0.05 / len(guess_counts(1000))
    assert most == pytest.approx(epsilon_lower_bound(1000, 600, 600, 1e-5, significance))
    assert most < epsilon_lower_bound(1000, 1000, 1000, 1e-5, significance)


def test_too_few_canaries_are_underpowered_even_when_every_guess_is_right():
    included = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    lower, most, _ = audit_scores(included.astype(float), included, 1e-5)
    assert most < 3.0  # 20 canaries cannot certify epsilon 3
    assert outcome_for(lower, most, claimed_epsilon=3.0) == "underpowered"
    assert outcome_for(lower, most, claimed_epsilon=1.0) == "violated"  # above the claim is proof, whatever the power
    assert outcome_for(0.5, most, claimed_epsilon=1.0) == "consistent"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same length"):
        audit_scores(np.zeros(4), np.zeros(5, bool), 1e-5)
    with pytest.raises(ValueError, match="finite"):
        audit_scores(np.array([0.0, np.nan]), np.array([True, False]), 1e-5)
    with pytest.raises(ValueError, match="v <= r <= m"):
        one_run_p_value(10, 5, 6, 1.0, 0.0)


# ---------------------------------------------------------------- the audit on a training run
def strong_influence_spec() -> PipelineSpec:
    """The digits declaration with settings where one example moves the model a lot (small batch, large step): there
    the attack is strong enough to catch training without noise, at test speed."""
    spec = digits_declaration()
    spec["model"] = {"family": "mlp", "hidden": [128]}
    spec["training"].update(
        epochs=60, batch_size=50, learning_rate=5.0, max_grad_norm=1.0, pretrain=None, accountant="rdp"
    )
    spec["privacy"]["training_epsilon"] = 1.0
    return PipelineSpec.model_validate(spec)


@pytest.fixture(scope="module")
def audit() -> CanaryAuditResult:
    """One audit: the declared-noise run and its noise-off control, same canaries (about 20 s of CPU)."""
    return run_canary_audit(strong_influence_spec(), FEATURES, list(range(10)), n_train=400, canaries=200)


def test_the_audit_fails_training_without_noise(audit):
    # the control is the same training with noise multiplier 0 and clipping on: its bound must exceed the claim
    assert audit.control_epsilon_lower_bound > audit.claimed_epsilon == 1.0


def test_the_audit_passes_the_declared_noise_only_as_consistent(audit):
    assert audit.noise_multiplier > 1.0
    assert audit.epsilon_lower_bound <= audit.claimed_epsilon
    assert audit.max_detectable_epsilon > audit.claimed_epsilon
    assert audit.outcome == "consistent"
    assert "consistent" in audit.summary and audit.private_rows_read == 0


def test_a_noise_off_run_is_reported_violated():
    result = run_canary_audit(
        strong_influence_spec(), FEATURES, list(range(10)), n_train=400, canaries=200, noise="off", control=False
    )
    assert result.noise_multiplier == 0.0 and result.noise == "off"
    assert result.canary == "gradient" and result.training_rows == 400  # gradient canaries are not rows
    assert result.guesses[0].correct == result.guesses[0].guesses  # the top and bottom 5% all right
    assert result.epsilon_lower_bound > result.claimed_epsilon
    assert result.outcome == "violated" and "VIOLATES" in result.summary


def test_an_attack_that_cannot_catch_the_noise_off_control_is_underpowered():
    # enough canaries to prove epsilon 3 in principle, but the attack proved only 2.4 on the run without noise
    assert outcome_for(0.1, 5.3, 3.0, control_lower_bound=2.4) == "underpowered"
    assert outcome_for(0.1, 5.3, 3.0, control_lower_bound=3.2) == "consistent"
    assert outcome_for(3.1, 5.3, 3.0, control_lower_bound=2.4) == "violated"


def test_odd_or_oversized_canary_counts_are_refused():
    from edgeops.errors import TrainingError

    with pytest.raises(TrainingError, match="even number of canaries"):
        run_canary_audit(strong_influence_spec(), FEATURES, list(range(10)), n_train=400, canaries=201)
    with pytest.raises(TrainingError, match="do not fit"):
        run_canary_audit(strong_influence_spec(), FEATURES, list(range(10)), n_train=90, canaries=200, canary="input")
    with pytest.raises(TrainingError, match="largest weight tensor has 8192"):  # 64 x 128: one coordinate a canary
        run_canary_audit(strong_influence_spec(), FEATURES, list(range(10)), n_train=400, canaries=8194)


def test_input_canaries_catch_training_without_noise_where_one_row_moves_the_model_a_lot():
    result = run_canary_audit(
        strong_influence_spec(),
        FEATURES,
        list(range(10)),
        n_train=400,
        canaries=200,
        canary="input",
        noise="off",
        control=False,
    )
    assert result.canary == "input" and result.training_rows == 400 - 100 + result.canaries_included
    assert result.outcome == "violated", result.summary


def test_the_declaration_refuses_an_odd_canary_count_naming_the_field():
    import yaml

    from edgeops.errors import SpecError
    from edgeops.spec import parse_spec

    spec = digits_declaration()
    spec["privacy"]["audit"] = {"enabled": True, "canaries": 999}
    with pytest.raises(SpecError, match="privacy.audit.canaries"):
        parse_spec(yaml.safe_dump(spec))
    spec["privacy"]["audit"] = {"enabled": True, "canaries": 1000}
    assert parse_spec(yaml.safe_dump(spec)).privacy.audit.canaries == 1000
    assert parse_spec(yaml.safe_dump(digits_declaration())).privacy.audit.enabled is False  # off by default


def test_gradient_canaries_add_the_clipping_norm_at_sampled_included_coordinates_only():
    import torch

    from edgeops.audit import GradientCanaries

    weights = torch.nn.Parameter(torch.zeros(4, 5))
    weights.summed_grad = torch.zeros(4, 5)
    optimizer = type("StubOptimizer", (), {"params": [weights], "max_grad_norm": 0.1})()
    coordinates, included = np.array([0, 7, 13, 19]), np.array([True, False, True, True])
    GradientCanaries(weights, coordinates, included, 1.0, np.random.default_rng(0))(optimizer)  # every one sampled
    flat = weights.summed_grad.view(-1).numpy()
    assert flat[[0, 13, 19]].tolist() == pytest.approx([0.1, 0.1, 0.1]) and flat[7] == 0
    assert np.count_nonzero(flat) == 3  # nothing anywhere else
    none = GradientCanaries(weights, coordinates, included, 0.0, np.random.default_rng(0))
    weights.summed_grad = torch.zeros(4, 5)
    none(optimizer)
    assert not weights.summed_grad.any()  # never sampled: no contribution
    frozen = GradientCanaries(torch.zeros(4, 5), coordinates, included, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not one the DP optimizer updates"):
        frozen(optimizer)
