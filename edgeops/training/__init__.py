"""Training: DP-SGD with Opacus (the released model), and a non-private reference (for comparison only).

Randomness: public randomness (initialisation, pre-training) is seeded by the declaration; the DP-SGD noise and
the Poisson sampling come from edgeops.noise (a secret ChaCha20 keystream, never a seeded generator), so two runs of
the same declaration give different weights. Resumable: a checkpoint every few epochs holds the weights, the
optimizer state, the noise streams' draw counters (not secret) and the accountant's history; the secret itself is
reused only from its owner-only file, and the ledger charge is keyed by the secret's identity so that a resumed run
is never charged twice and a fresh draw always is.
"""

# What code outside the package imported from edgeops.training when it was one module.
from edgeops.training.charged import charged_dp_sgd, noise_statement
from edgeops.training.data import TrainingData, new_model
from edgeops.training.dpsgd import plan_dp_training, train_dp
from edgeops.training.evaluation import evaluate_logits, predict_logits
from edgeops.training.nonprivate import (
    cached_pretraining,
    pretrain_on_public,
    public_synthetic_digits,
    train_nonprivate,
)
from edgeops.training.stage import run_dp_training

__all__ = [
    "TrainingData",
    "cached_pretraining",
    "charged_dp_sgd",
    "evaluate_logits",
    "new_model",
    "noise_statement",
    "plan_dp_training",
    "predict_logits",
    "pretrain_on_public",
    "public_synthetic_digits",
    "run_dp_training",
    "train_dp",
    "train_nonprivate",
]
