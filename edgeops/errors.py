"""The project's own errors. Each names where the problem is: a file, a YAML path, a column or rows."""

from __future__ import annotations


class EdgeopsError(Exception):
    """Base class: a clear, user-facing error. The CLI prints it without a traceback."""


class SpecError(EdgeopsError):
    """A declaration (pipelines/<name>.yaml) is invalid. `problems` lists (yaml_path, message)."""

    def __init__(self, file: str, problems: list[tuple[str, str]]):
        self.file = file
        self.problems = problems
        lines = "\n".join(f"  {path or '<root>'}: {message}" for path, message in problems)
        super().__init__(f"{file}: invalid declaration\n{lines}")


class DataError(EdgeopsError):
    """A data source cannot be read at all (missing, empty, truncated, wrong format)."""

    def __init__(self, source: str, message: str, column: str | None = None, rows: list[int] | None = None):
        self.source = source
        self.column = column
        self.rows = rows or []
        where = source
        if column:
            where += f", column {column!r}"
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:10])
            where += f", rows [{shown}{', ...' if len(self.rows) > 10 else ''}]"
        super().__init__(f"{where}: {message}")


class PrivacyBudgetError(EdgeopsError):
    """A computation would spend more privacy budget than the declaration allows."""


class TrainingError(EdgeopsError):
    """Training cannot start or diverged."""


class CompressionError(EdgeopsError):
    """A target's recipe cannot be built."""


class FederatedError(EdgeopsError):
    """Federated training cannot go on: the data cannot be partitioned, or a round has too few usable client updates."""


class CardError(EdgeopsError):
    """A model card cannot be built, read, verified or reviewed (missing evidence, bad mapping rules or
    attestations)."""


class ReleaseError(EdgeopsError):
    """A version cannot be promoted or rolled back, or a registered version's record is missing or inconsistent."""


def caused_by(
    err: BaseException | None,
    types: tuple[type, ...] = (),
    names: set[str] | frozenset[str] = frozenset(),
    errnos: set[int] | frozenset[int] = frozenset(),
    texts: tuple[str, ...] = (),
) -> bool:
    """Whether an error or anything in its cause/context chain matches: an exception type, a class name (for libraries
    not imported here), an OSError errno, or a text in its message. Libraries wrap the root cause (SQLAlchemy around
    sqlite3, MLflow around requests around urllib3), so the chain is where it is found."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, types) or type(err).__name__ in names or (isinstance(err, OSError) and err.errno in errnos):
            return True
        if any(text in str(err) for text in texts):
            return True
        err = err.__cause__ or err.__context__
    return False


class StateFolderError(EdgeopsError):
    """The state folder (EDGEOPS_HOME) cannot be used: not writable by this user, or its filesystem is (nearly) full."""


class ProjectError(EdgeopsError):
    """The folder is not an edgeops project (no workspace.yaml or no pipelines/); the message offers `edgeops init`."""
