"""The one source of privacy randomness: every DP mechanism's noise and private sampling is drawn here.

Why. A DP guarantee holds only if the noise is unknown to the adversary. A `torch.Generator().manual_seed(seed)`
keyed by the declared `training.seed` is known to anyone who read the declaration (or the ledger, MLflow, the card):
they replay the run with and without one row and compare the weights bit for bit. Opacus's answer is
`PrivacyEngine(secure_mode=True)`, which draws from torchcsprng (AES-128-CTR keyed from /dev/urandom); torchcsprng's
last release (0.2.1, 2021) does not build against torch 2.x, so secure_mode cannot be switched on here.

What this module does instead (an equivalent of torchcsprng's random-device generator, in the same CTR design):
- The secret is 32 bytes from `os.urandom` (the kernel CSPRNG), drawn fresh for each computation.
- Each use ("dp-sgd noise", "dp-sgd sampling", "dp-fedavg noise", ...) gets its own key, HMAC-SHA256(secret, purpose),
  and a `NoiseStream` turns that key into a ChaCha20 keystream (`cryptography`, i.e. OpenSSL). Every draw uses a
  new 96-bit nonce (a draw counter), so no keystream block is ever reused under one key. ChaCha20 is a PRF: without
  the key its output is indistinguishable from uniform bytes, and the counter (stored in checkpoints, not secret)
  reveals nothing. This is computational DP, the same standard as Opacus secure_mode (all practical CSPRNGs are).
- Uniforms: the top 53 bits of each 64-bit word, offset by half a step, so every double lies strictly in (0, 1).
- Bernoulli / Poisson sampling masks compare 64-bit words with floor(q * 2^64): exact to 2^-64, no float rounding.
- Gaussian noise: Box-Muller in float64, then the Opacus secure_mode construction: the sum of 4 independent
  N(0, std^2) draws divided by 2 (Holohan and Braghin 2021, "Secure Random Sampling in Differential Privacy",
  arXiv:2107.10138, section 5.1). A single floating-point Gaussian draw has a porous set of reachable values, so
  a released x + noise can betray x (Jin et al. 2022, "Are We There Yet? Timing and Floating-Point Attacks on
  Differential Privacy Systems", arXiv:2112.05307, which broke Opacus's earlier sampler); summing 2n draws raises the
  attack's cost from 2^53 to 2^(53(2n-1)) = 2^159 for n = 2. The sum is then cast to the tensor's dtype (float32 for
  gradients). What is not done: Mironov's snapping (2012, "On Significance of the Least Significant Bits for
  Differential Privacy", for Laplace) or a discrete Gaussian sampler (Canonne, Kamath and Steinke 2020), which would
  make the guarantee exact in floating point; like Opacus, this is a mitigation of the published attacks, not a proof.
- Laplace: no mechanism of ours draws Laplace noise. diffprivlib 0.6's mechanisms (the GaussianNB baseline's Laplace
  variants and the quantiles' exponential mechanism) take `random_state=None`, for which `check_random_state(None,
  secure=True)` gives `secrets.SystemRandom`, and its Laplace sampler uses four uniforms (the same Holohan-Braghin
  fix); edgeops passes None there, never a seed.

The secret is never written to the declaration, MLflow, the ledger, the card, logs or Dagster metadata. `identity`
(a domain-separated SHA-256 of the secret) is safe to record and keys ledger charges: a fresh draw is a new charge.
A resume may reuse the secret only from an owner-only (0600) file under <home>/keys/noise/, beside the signing key;
the file is deleted once the computation completes (only its identity is kept), so a later run draws fresh noise.

Tests (and only tests) can make the noise deterministic with one switch: EDGEOPS_INSECURE_TEST_NOISE_SEED, honoured
only when EDGEOPS_TEST_MODE=1 and refused otherwise. Its output is stamped "NOT PRIVATE: deterministic noise" and
release refuses to promote it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import numpy as np
from numpy.typing import DTypeLike

from edgeops.errors import EdgeopsError

if TYPE_CHECKING:
    import torch

SECRET_BYTES = 32
TEST_MODE_ENV = "EDGEOPS_TEST_MODE"
TEST_SEED_ENV = "EDGEOPS_INSECURE_TEST_NOISE_SEED"
NOT_PRIVATE = "NOT PRIVATE: deterministic noise"
SECRET_SOURCE = "secret: ChaCha20 keystream keyed from os.urandom (32 bytes per computation)"
NOISE_TAG = "edgeops.noise"  # the model-version tag that release reads
GAUSSIAN_TERMS = 4  # Opacus secure_mode: sum of 2n = 4 draws, divided by sqrt(4) = 2


class NoiseError(EdgeopsError):
    pass


def _draw_secret() -> bytes:
    """The only place a secret is drawn: the kernel CSPRNG."""
    return os.urandom(SECRET_BYTES)


class NoiseStream:
    """A ChaCha20 keystream under one derived key; `draws` counts the nonces used (safe to store, not secret)."""

    def __init__(self, key: bytes, draws: int = 0):
        self._key = key
        self.draws = int(draws)

    def __repr__(self) -> str:
        return f"NoiseStream(draws={self.draws})"

    def __getstate__(self) -> NoReturn:
        raise NoiseError("a noise stream holds a secret key and is never serialised")

    def random_bytes(self, n: int) -> bytes:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

        # cryptography's ChaCha20 nonce: 4-byte little-endian block counter, then 12 bytes: our draw counter
        nonce = (0).to_bytes(4, "little") + self.draws.to_bytes(12, "little")
        self.draws += 1
        return Cipher(algorithms.ChaCha20(self._key, nonce), mode=None).encryptor().update(bytes(n))

    def uint64(self, n: int) -> np.ndarray:
        return np.frombuffer(self.random_bytes(8 * n), dtype="<u8").astype(np.uint64)

    def uniform(self, n: int) -> np.ndarray:
        """n doubles uniform in (0, 1) (53 random bits each, never 0 or 1)."""
        return ((self.uint64(n) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    def standard_normal(self, n: int) -> np.ndarray:
        """n N(0, 1) draws (Box-Muller, float64). Use `gaussian` for DP noise."""
        half = (n + 1) // 2
        u = self.uniform(2 * half)
        radius = np.sqrt(-2.0 * np.log(u[:half]))
        angle = 2.0 * np.pi * u[half:]
        return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:n]

    def gaussian(self, std: float, shape: int | Sequence[int], dtype: DTypeLike = np.float32) -> np.ndarray:
        """N(0, std^2) noise of `shape`, hardened against floating-point attacks (module docstring)."""
        shape = tuple(int(s) for s in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
        size = int(np.prod(shape)) if shape else 1
        if std == 0:
            return np.zeros(shape, dtype=dtype)
        total = self.standard_normal(GAUSSIAN_TERMS * size).reshape(GAUSSIAN_TERMS, size).sum(axis=0)
        return cast(np.ndarray, (total * (std / math.sqrt(GAUSSIAN_TERMS))).reshape(shape).astype(dtype))

    def gaussian_like(self, reference: torch.Tensor, std: float) -> torch.Tensor:
        """A torch tensor of N(0, std^2) noise with the reference's shape, dtype and device."""
        import torch

        noise = self.gaussian(std, tuple(reference.shape), np.float64)
        return torch.from_numpy(noise).to(device=reference.device, dtype=reference.dtype)

    def bernoulli(self, p: float, n: int) -> np.ndarray:
        """n independent Bernoulli(p) booleans, exact to 2^-64."""
        if not 0 <= p <= 1:
            raise NoiseError(f"sampling probability {p} is not in [0, 1]")
        if p == 1:
            return np.ones(n, dtype=bool)
        threshold = np.uint64(min(int(math.floor(p * 2**64)), 2**64 - 1))
        return self.uint64(n) < threshold

    def poisson_rows(self, n: int, rate: float) -> np.ndarray:
        """Poisson subsampling: the indices of the rows that each entered with probability `rate`."""
        return np.flatnonzero(self.bernoulli(rate, n))


class NoiseSource:
    """One computation's secret. Never printed, pickled or recorded; `identity` and `record()` are safe to record."""

    def __init__(self, secret: bytes, *, deterministic: bool = False, origin: str = "fresh"):
        if len(secret) != SECRET_BYTES:
            raise NoiseError(f"a noise secret is {SECRET_BYTES} bytes, got {len(secret)}")
        self._secret = bytes(secret)
        self.deterministic = deterministic
        self.origin = origin

    @classmethod
    def fresh(cls) -> NoiseSource:
        """A new secret from os.urandom, or the test switch's deterministic one (see `from_environment`)."""
        return from_environment() or cls(_draw_secret())

    @property
    def identity(self) -> str:
        return "sha256:" + hashlib.sha256(b"edgeops noise identity\x00" + self._secret).hexdigest()[:32]

    @property
    def private(self) -> bool:
        return not self.deterministic

    def stream(self, purpose: str, draws: int = 0) -> NoiseStream:
        return NoiseStream(hmac.new(self._secret, purpose.encode(), hashlib.sha256).digest(), draws)

    def record(self) -> dict[str, Any]:
        """What may be written about the noise (metadata, card, ledger): never the secret."""
        if self.deterministic:
            return {"source": NOT_PRIVATE, "private": False, "identity": self.identity, "origin": self.origin}
        return {
            "source": SECRET_SOURCE,
            "private": True,
            "identity": self.identity,
            "origin": self.origin,
            "gaussian": f"sum of {GAUSSIAN_TERMS} Box-Muller draws / 2 (Opacus secure_mode construction)",
        }

    def __repr__(self) -> str:
        return f"NoiseSource(identity={self.identity}, deterministic={self.deterministic}, origin={self.origin!r})"

    def __getstate__(self) -> NoReturn:
        raise NoiseError("a noise source holds the secret and is never serialised")


def from_environment() -> NoiseSource | None:
    """The test switch: EDGEOPS_INSECURE_TEST_NOISE_SEED, honoured only with EDGEOPS_TEST_MODE=1 (refused otherwise)."""
    seed = os.environ.get(TEST_SEED_ENV)
    if seed is None or seed == "":
        return None
    if os.environ.get(TEST_MODE_ENV) != "1":
        raise NoiseError(
            f"environment variable {TEST_SEED_ENV} asks for deterministic (NOT PRIVATE) noise, but {TEST_MODE_ENV} is "
            "not 1: "
            f"refused. Unset {TEST_SEED_ENV}; deterministic noise is for the test suite only"
        )
    secret = hashlib.sha256(b"edgeops insecure test noise\x00" + seed.encode()).digest()
    return NoiseSource(secret, deterministic=True, origin=f"test switch {TEST_SEED_ENV}")


def combined_statement(*statements: str | None) -> str:
    """One artifact's noise statement from its parts (DP model, DP fine-tuning, distillation): NOT PRIVATE if any part
    used deterministic noise, "unknown" if any part has no record, else "secret"."""
    parts = [s or "unknown (no noise record)" for s in statements]
    if any(s.startswith(NOT_PRIVATE) for s in parts):
        return NOT_PRIVATE
    if any(not s.startswith("secret") for s in parts):
        return "unknown (trained without an edgeops.noise record)"
    return "secret"


def diffprivlib_random_state() -> int | None:
    """What edgeops passes as diffprivlib's random_state: None (secrets.SystemRandom) always, except under the test
    switch, where a seed derived from it makes the diffprivlib mechanisms deterministic too (and NOT PRIVATE)."""
    test = from_environment()
    if test is None:
        return None
    return int.from_bytes(test.stream("diffprivlib random_state").random_bytes(4), "little") >> 1


NOISE_SEED_KEYS = {
    "noise_seed",
    "insecure_test_noise_seed",
    "test_noise_seed",
    "deterministic_noise",
    "noise_generator_seed",
}


def declaration_noise_requests(raw: Any) -> list[tuple[str, str]]:
    """(YAML path, why) for every key in a declaration that asks for deterministic noise: a declaration never can."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}" if path else str(key)
                if str(key).lower() in NOISE_SEED_KEYS:
                    found.append(
                        (
                            here,
                            "asks for deterministic noise: refused. The DP noise is always secret; only the test "
                            "suite may "
                            f"set {TEST_SEED_ENV} with {TEST_MODE_ENV}=1",
                        )
                    )
                walk(value, here)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    walk(raw, "")
    return found


# ---------------------------------------------------------------- the owner-only store for resumes
def noise_dir(home: Path | None = None) -> Path:
    """<home>/keys/noise: beside the signing key (edgeops.signing keeps it in <home>/keys/)."""
    if home is None:
        from edgeops.settings import Settings

        home = Settings.resolve().home
    return Path(home) / "keys" / "noise"


class NoiseSecrets:
    """Per-computation secrets kept only for a resume: `<name>.secret` (0600) while the computation runs,
    `<name>.done` (its identity only, public) after it completes."""

    def __init__(self, home: Path | None = None):
        self.dir = noise_dir(home)

    def _name(self, computation: str) -> str:
        return hashlib.sha256(computation.encode()).hexdigest()[:24]

    def secret_path(self, computation: str) -> Path:
        return self.dir / f"{self._name(computation)}.secret"

    def _started_path(self, computation: str) -> Path:
        return self.dir / f"{self._name(computation)}.started"

    def _done_path(self, computation: str) -> Path:
        return self.dir / f"{self._name(computation)}.done"

    def finished_identity(self, computation: str) -> str | None:
        """The identity of the completed run of this computation (its secret is gone), if any."""
        path = self._done_path(computation)
        try:
            return json.loads(path.read_text())["identity"] if path.exists() else None
        except (ValueError, KeyError):
            return None

    def open(self, computation: str, progress: Callable[[str], object] = lambda _: None) -> NoiseSource:
        """The test switch's source; else this computation's unfinished secret (a resume); else a fresh draw, saved
        0600."""
        test = from_environment()
        if test is not None:
            return test
        path = self.secret_path(computation)
        if path.exists():
            return NoiseSource(read_secret_file(path), origin="resumed (owner-only secret file)")
        started = self._started_path(computation)
        origin = "fresh"
        if started.exists():
            origin = (
                "fresh (the interrupted run's secret file is missing: its checkpoint is not reused; a new ledger "
                "charge)"
            )
            progress(
                f"noise secret {path} is missing: drew a fresh secret; the interrupted run cannot be resumed and this "
                "run is charged anew"
            )
        source = NoiseSource(_draw_secret(), origin=origin)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(source._secret)
        tmp.replace(path)
        started.write_text(json.dumps({"identity": source.identity}))
        return source

    def finish(self, computation: str, source: NoiseSource) -> None:
        """The computation completed: keep only its identity, delete the secret (a later run draws fresh noise)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._done_path(computation).write_text(json.dumps({"identity": source.identity}))
        self.secret_path(computation).unlink(missing_ok=True)
        self._started_path(computation).unlink(missing_ok=True)


def read_secret_file(path: Path) -> bytes:
    """A secret file is accepted only if it is a regular file owned by this user and readable by no one else."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise NoiseError(f"noise secret file {path} is not a regular file: refused")
    if info.st_mode & 0o077:
        raise NoiseError(
            f"noise secret file {path} has permissions {stat.filemode(info.st_mode)} (mode {info.st_mode & 0o777:o}): "
            f"it must be readable by its owner alone (chmod 600 {path}); refused"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise NoiseError(
            f"noise secret file {path} belongs to uid {info.st_uid}, not to this user ({os.getuid()}): refused"
        )
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise NoiseError(
            f"noise secret file {path} holds {len(secret)} bytes, not {SECRET_BYTES}: refused (delete it to draw "
            "fresh noise)"
        )
    return secret
