"""Progress reports reach the terminal's listeners, and a broken listener never breaks the work."""

from __future__ import annotations

from edgeops import progress


def test_reports_reach_listeners_until_they_stop_listening():
    seen = []
    with progress.listening(lambda *report: seen.append(report)):
        progress.advance("DP-SGD training", 1, 40, "eps 0.4")
    progress.advance("DP-SGD training", 2, 40)
    assert seen == [("DP-SGD training", 1, 40, "eps 0.4")]


def test_a_failing_listener_is_dropped_and_the_work_goes_on():
    calls = []

    def broken(*report):
        calls.append(report)
        raise OSError("terminal closed")

    with progress.listening(broken):
        progress.advance("federated rounds", 1, 3)
        progress.advance("federated rounds", 2, 3)  # not raised, and the broken listener is gone
    assert calls == [("federated rounds", 1, 3, "")]


def test_dp_training_epochs_are_reported(monkeypatch):
    """The real DP-SGD loop reports every epoch with its epsilon so far."""
    import tempfile
    from pathlib import Path

    from helpers import NullRun, Project, table_declaration, table_frame

    from edgeops.data import ingest
    from edgeops.spec import load_declaration
    from edgeops.training import TrainingData, plan_dp_training, train_dp

    root = Path(tempfile.mkdtemp())
    project = Project(root / "p", monkeypatch)
    project.write_csv(table_frame(200))
    declaration = load_declaration(project.declare(table_declaration()))
    ref = ingest(declaration, root / "datasets", NullRun())
    data = TrainingData.from_ref(ref, declaration.spec)
    seen = []
    with progress.listening(lambda *report: seen.append(report)):
        train_dp(declaration.spec, data, plan_dp_training(declaration.spec, data), root / "train")
    epochs = declaration.spec.training.epochs
    assert [(task, done, total) for task, done, total, _ in seen] == [
        ("DP-SGD training", e, epochs) for e in range(1, epochs + 1)
    ]
    assert all("eps" in detail for *_, detail in seen)


def test_terminal_bars_draw_each_task_on_stderr(capsys):
    with progress.terminal_bars(True):
        progress.advance("drift batches", 3, 5, "batch-003.csv")
        progress.advance("DP-SGD training", 40, 40, "eps 2.99")
    err = capsys.readouterr().err
    assert "drift batches" in err and "3/5" in err and "batch-003.csv" in err
    assert "DP-SGD training" in err and "40/40" in err
    assert not progress._listeners  # the bars stop listening when the command ends
