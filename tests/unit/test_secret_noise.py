"""Secret noise (edgeops.noise): the DP noise and private sampling cannot be replayed from anything public, the
secret never reaches a public record, and deterministic noise exists only behind one test-mode switch."""

from __future__ import annotations

import base64
import json
import os
import pickle

import numpy as np
import pytest
from helpers import table_declaration, table_frame

from edgeops import noise as noise_module
from edgeops.noise import NOT_PRIVATE, NoiseError, NoiseSecrets, NoiseSource


def test_streams_are_keyed_by_the_secret_and_purpose_and_have_the_declared_law():
    first, second = NoiseSource.fresh(), NoiseSource.fresh()
    assert first.identity != second.identity
    a, b = first.stream("p").gaussian(1.0, (4096,), np.float64), second.stream("p").gaussian(1.0, (4096,), np.float64)
    assert not np.array_equal(a, b)
    assert np.array_equal(
        first.stream("p").gaussian(1.0, (16,)), first.stream("p").gaussian(1.0, (16,))
    )  # one secret, one stream
    assert not np.array_equal(first.stream("p").gaussian(1.0, (16,)), first.stream("q").gaussian(1.0, (16,)))
    draws = first.stream("law").gaussian(2.5, (200_000,), np.float64)
    assert abs(draws.mean()) < 0.03 and abs(draws.std() - 2.5) < 0.03
    mask = first.stream("sampling").bernoulli(0.1, 200_000)
    assert abs(mask.mean() - 0.1) < 0.003
    stream = first.stream("resume")
    stream.gaussian(1.0, (8,))
    continued = stream.gaussian(1.0, (8,))
    assert np.array_equal(
        first.stream("resume", draws=1).gaussian(1.0, (8,)), continued
    )  # a stored counter resumes the stream


def test_the_secret_is_never_printed_or_serialised():
    source = NoiseSource.fresh()
    secret = source._secret
    for text in (repr(source), json.dumps(source.record()), repr(source.stream("x"))):
        assert secret.hex() not in text and base64.b64encode(secret).decode() not in text
    with pytest.raises(NoiseError):
        pickle.dumps(source)
    with pytest.raises(NoiseError):
        pickle.dumps(source.stream("x"))


def test_deterministic_noise_is_refused_outside_test_mode_naming_the_setting(monkeypatch):
    monkeypatch.setenv("EDGEOPS_INSECURE_TEST_NOISE_SEED", "1")
    monkeypatch.delenv("EDGEOPS_TEST_MODE", raising=False)
    with pytest.raises(NoiseError, match="EDGEOPS_INSECURE_TEST_NOISE_SEED.*EDGEOPS_TEST_MODE is not 1"):
        NoiseSource.fresh()
    monkeypatch.setenv("EDGEOPS_TEST_MODE", "1")
    source = NoiseSource.fresh()
    assert source.deterministic and source.record()["source"] == NOT_PRIVATE
    assert NoiseSource.fresh().identity == source.identity


def test_a_declaration_asking_for_deterministic_noise_is_refused_naming_the_key():
    import yaml

    from edgeops.errors import SpecError
    from edgeops.spec import parse_spec

    declaration = table_declaration()
    declaration["training"]["noise_seed"] = 3
    with pytest.raises(SpecError, match=r"training\.noise_seed: asks for deterministic noise"):
        parse_spec(yaml.safe_dump(declaration), "pipelines/tabular.yaml")


def test_a_secret_file_with_loose_permissions_is_refused_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEOPS_INSECURE_TEST_NOISE_SEED", raising=False)
    store = NoiseSecrets(tmp_path)
    first = store.open("dpsgd:computation")
    path = store.secret_path("dpsgd:computation")
    assert path.parent == tmp_path / "keys" / "noise" and (path.stat().st_mode & 0o777) == 0o600
    assert store.open("dpsgd:computation").identity == first.identity  # an unfinished run's secret: a resume reuses it
    os.chmod(path, 0o644)
    with pytest.raises(NoiseError, match=f"{path}.*readable by its owner alone"):
        store.open("dpsgd:computation")


def test_a_missing_secret_on_resume_is_a_fresh_draw_and_said_so(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEOPS_INSECURE_TEST_NOISE_SEED", raising=False)
    store = NoiseSecrets(tmp_path)
    first = store.open("dpsgd:c")
    store.secret_path("dpsgd:c").unlink()
    notes = []
    second = store.open("dpsgd:c", notes.append)
    assert second.identity != first.identity and second.origin.startswith(
        "fresh (the interrupted run's secret file is missing"
    )
    assert notes and "charged anew" in notes[0]
    store.finish("dpsgd:c", second)
    assert not store.secret_path("dpsgd:c").exists() and store.finished_identity("dpsgd:c") == second.identity
    assert store.open("dpsgd:c").identity not in {
        first.identity,
        second.identity,
    }  # a finished computation's secret is gone


def test_flower_dp_noise_comes_from_the_secret_not_numpys_seeded_generator():
    import flwr.supercore.differential_privacy as core

    from edgeops.federated import secret_flower_noise

    outputs = []
    for source in (NoiseSource.fresh(), NoiseSource.fresh()):
        np.random.seed(0)  # what train_federated does with the declared seed
        arrays = [np.zeros((50,), dtype=np.float32)]
        with secret_flower_noise(source.stream("dp-fedavg gaussian noise")):
            core.add_gaussian_noise_inplace(arrays, 1.0)
        outputs.append(arrays[0])
    assert not np.array_equal(*outputs) and outputs[0].std() > 0.5
    assert core.add_gaussian_noise_inplace.__module__ == "flwr.supercore.differential_privacy"  # restored afterwards


def _secrets_in(blob: bytes, secrets: list[bytes]) -> list[str]:
    found = []
    for secret in secrets:
        for form in (secret, secret.hex().encode(), base64.b64encode(secret), base64.urlsafe_b64encode(secret)):
            if form in blob:
                found.append(secret.hex()[:8])
    return found


def test_neighbouring_datasets_publish_no_secret_and_no_unnoised_loss(tmp_path_factory, monkeypatch):
    """Two projects whose data differ in one row: the records anyone can read (MLflow store and artifacts, Dagster
    event log with metadata and logs, the ledger) hold neither noise secret, and the models differ by more than the
    row."""
    import dagster as dg
    from helpers import Project

    from pipelines.instance import ensure_instance
    from pipelines.wiring import build_definitions, resources_for

    monkeypatch.delenv("EDGEOPS_INSECURE_TEST_NOISE_SEED", raising=False)
    drawn: list[bytes] = []
    original = noise_module._draw_secret

    def recording() -> bytes:
        drawn.append(original())
        return drawn[-1]

    monkeypatch.setattr(noise_module, "_draw_secret", recording)
    frame = table_frame(300)
    neighbour = frame.copy()
    neighbour.loc[17, "f2"] = 9.5
    outputs = []
    for name, data in (("with_row", frame), ("without_row", neighbour)):
        project = Project(tmp_path_factory.mktemp(name) / "project", monkeypatch)
        project.write_csv(data)
        spec = table_declaration("tabular")
        spec["training"]["epochs"] = 2  # the records, not the accuracy, are under test
        project.declare(spec)
        settings = project.settings()
        defs = build_definitions(settings)
        assets = [a for a in defs.assets if a.key.path[0] == "tabular"]
        checks = [c for c in defs.asset_checks if next(iter(c.check_keys)).asset_key.path[0] == "tabular"]
        result = dg.materialize(
            [*assets, *checks],
            selection=[dg.AssetKey(["tabular", k]) for k in ("raw_dataset", "validated_dataset", "dp_model")],
            instance=ensure_instance(settings),
            resources=resources_for(settings),
        )
        model = result.output_for_node("tabular__dp_model")
        metadata = next(
            e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "dp_model"
        ).materialization.metadata
        assert metadata["noise"].value.startswith("secret (ChaCha20") and model.privacy.noise_identity
        outputs.append((project, settings, model))
    assert len(drawn) >= 2
    assert outputs[0][2].weights_sha256 != outputs[1][2].weights_sha256
    scanned, found = 0, []
    for _project, settings, _ in outputs:
        for path in settings.home.rglob("*"):
            if path.is_file() and path.parent.name != "noise":
                blob = path.read_bytes()
                scanned += 1
                found += [f"{hit} in {path}" for hit in _secrets_in(blob, drawn)]
        assert not list((settings.home / "keys" / "noise").glob("*.secret"))  # finished runs keep only the identity
        from mlflow.tracking import MlflowClient

        client = MlflowClient(settings.mlflow_tracking_uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert runs and not any(key.startswith("train/train_loss") for run in runs for key in run.data.metrics)
    assert scanned > 20 and not found, found


def test_release_refuses_a_model_trained_with_deterministic_noise(tmp_path):
    import yaml
    from mlflow.tracking import MlflowClient

    from edgeops import release
    from edgeops.noise import NOISE_TAG
    from edgeops.spec import Declaration, parse_spec, spec_sha256

    spec = parse_spec(yaml.safe_dump(table_declaration("tabular")), "pipelines/tabular.yaml")
    declaration = Declaration(spec, tmp_path / "tabular.yaml", tmp_path, spec_sha256(spec))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("tabular", artifact_location=(tmp_path / "artifacts").as_uri())
    target = spec.targets[0].name
    name = f"tabular-{target}"
    client.create_registered_model(name)
    passed = {"edgeops.check.latency": "passed", "edgeops.check.memory": "passed", "edgeops.target": target}
    stamped = client.create_model_version(name, str(tmp_path), tags={**passed, NOISE_TAG: NOT_PRIVATE})
    secret = client.create_model_version(name, str(tmp_path), tags={**passed, NOISE_TAG: "secret"})
    unknown = client.create_model_version(name, str(tmp_path), tags=passed)
    gates = {
        v.version: release.gates(client, declaration, target, v.version, tmp_path, tmp_path)
        for v in (stamped, secret, unknown)
    }
    assert gates[secret.version]["noise"][0] is True
    assert gates[stamped.version]["noise"] == (
        False,
        f"{NOT_PRIVATE} (the test switch EDGEOPS_INSECURE_TEST_NOISE_SEED): never released",
    )
    assert gates[unknown.version]["noise"][0] is False
    with pytest.raises(release.ReleaseError, match=f"noise: {NOT_PRIVATE}"):
        release.promote(client, declaration, target, tmp_path, tmp_path, {}, version=stamped.version)
    assert not client.get_registered_model(name).aliases  # nothing moved
