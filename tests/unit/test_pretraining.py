"""Public pre-training on edgeops.synthetic's digits: deterministic, in the digits' value range, recorded in the
training record and the card, not a ledger entry, and refused where it does not fit the declaration."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import table_declaration, tiny_digits, train_dp_model

from edgeops.errors import SpecError
from edgeops.ledger import Budget
from edgeops.spec import load_declaration
from edgeops.synthetic import LEVELS, synthetic_digits


def test_synthetic_digits_are_deterministic_balanced_and_in_the_scan_levels():
    x, y = synthetic_digits(200, seed=7)
    again, labels_again = synthetic_digits(200, seed=7)
    assert np.array_equal(x, again) and np.array_equal(y, labels_again)
    assert not np.array_equal(x, synthetic_digits(200, seed=8)[0])
    assert x.shape == (200, 64) and x.min() >= 0 and x.max() <= LEVELS and np.all(x == np.round(x))
    assert np.bincount(y, minlength=10).tolist() == [20] * 10
    class_means = np.stack([x[y == c].mean(axis=0) for c in range(10)])
    assert np.linalg.matrix_rank(class_means) == 10  # ten distinct glyph families, not one shape relabelled


def test_a_restricted_class_list_draws_only_those_digits():
    _x, y = synthetic_digits(30, seed=0, classes=[3, 8])
    assert set(y.tolist()) == {0, 1}  # indices into the declared classes, like the training labels


def test_dp_training_starts_from_the_pretrained_weights_records_it_and_charges_only_dp_sgd(project, tmp_path):
    spec = tiny_digits()
    spec["training"]["epochs"] = 2
    declaration = load_declaration(project.declare(spec))
    dp_model, ledger = train_dp_model(declaration, tmp_path, Budget(20, 1e-5))
    pretrain = dp_model.pretrain
    assert pretrain["source"] == "synthetic_digits" and pretrain["samples"] == spec["training"]["pretrain"]["samples"]
    assert 0.2 < pretrain["test_accuracy_before_dp"] <= 1  # it learned digits from synthetic data alone (chance: 0.1)
    assert "no privacy cost" in pretrain["privacy"]
    assert [e.mechanism for e in ledger.entries()] == ["dp-sgd (opacus)"]

    from edgeops.cards.sections import pretrained_base

    assert "public synthetic digits" in pretrained_base(dp_model) and "cost no privacy" in pretrained_base(dp_model)


def test_pretraining_is_reproducible(project):
    from edgeops.training import TrainingData, pretrain_on_public

    declaration = load_declaration(project.declare(tiny_digits()))
    rng = np.random.default_rng(0)
    fake = TrainingData(
        *(rng.uniform(0, 16, (20, 64)).astype(np.float32), rng.integers(0, 10, 20)) * 3,
        classes=list(range(10)),
        digest="d",
        features=[f"pixel_{i}" for i in range(64)],
    )
    spec = declaration.spec.model_copy(
        update={
            "training": declaration.spec.training.model_copy(
                update={"pretrain": declaration.spec.training.pretrain.model_copy(update={"samples": 300})}
            )
        }
    )
    first, second = pretrain_on_public(spec, fake)[1], pretrain_on_public(spec, fake)[1]
    assert first["weights_sha256"] == second["weights_sha256"]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s["training"].update(pretrain={"source": "synthetic_digits"}),
            r"training\.pretrain\.source: synthetic_digits draws 8x8 digits",
        ),
        (
            lambda s: s["targets"][0].update(recipe=[{"step": "int8", "calibration": {"source": "synthetic_digits"}}]),
            r"targets\.0\.recipe: calibration source synthetic_digits draws 8x8 digits",
        ),
        (lambda s: s["training"].update(pretrain={"source": "hub:mnist"}), r"training\.pretrain\.source"),
    ],
)
def test_synthetic_digits_are_refused_for_a_table(project, change, message):
    spec = table_declaration()
    change(spec)
    with pytest.raises(SpecError, match=message):
        load_declaration(project.declare(spec, suite_from_declaration=False))


def test_pretraining_is_refused_for_federated_training(project):
    spec = tiny_digits()
    spec["training"]["mode"] = "federated"
    with pytest.raises(SpecError, match=r"training\.pretrain: public pre-training starts central DP-SGD only"):
        load_declaration(project.declare(spec, suite_from_declaration=False))
