"""The project's one family of user errors.

A `QlspecError` is something the user can fix (a bad spec field, a missing file, an unsupported ONNX
node, an unreachable board). The CLI prints it as one line, ``LOCATION: message``, and exits 2.
Anything that is not a `QlspecError` is a bug and keeps its traceback. `first_line` picks the line
of another tool's output (a compiler, the board's shell) that such a message quotes.
"""

from __future__ import annotations

from collections.abc import Sequence


class QlspecError(Exception):
    """A user error; `where` is a location such as ``app.yaml:14:5`` or ``model.onnx: node Conv_3``."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class SpecError(QlspecError):
    """The application spec is malformed, names an unknown key, or has an out-of-range value.

    One spec may have several errors; each is a (where, message) pair and prints as its own line.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message, where)
        self.errors: list[tuple[str | None, str]] = [(where, message)]

    @classmethod
    def many(cls, errors: Sequence[tuple[str | None, str]]) -> SpecError:
        first = cls(errors[0][1], errors[0][0])
        first.errors = list(errors)
        return first

    def __str__(self) -> str:
        return "\n".join(f"{w}: {m}" if w else m for w, m in self.errors)


class OnnxImportError(QlspecError):
    """An ONNX file cannot be parsed: unreadable, unsupported node, wrong attribute, shape mismatch."""


class GraphError(QlspecError):
    """A qlspec graph is malformed (dangling tensor, dtype mismatch, bad serialisation)."""


class StageError(QlspecError):
    """A stage cannot run: a missing input artefact, a missing data file, a failed external tool."""


class CheckpointError(QlspecError):
    """A checkpoint file is corrupt or does not match the network (missing or unexpected keys)."""


class ExportError(QlspecError):
    """A fake-quantised network cannot be integerised or written (unsupported layer, unstarted
    quantiser, a constant that float32 cannot hold exactly); `where` names the fx node."""


class BackendError(QlspecError):
    """A backend cannot build or run a graph: a missing toolchain, a failed compile, a failed run."""


class DeployError(QlspecError):
    """The board cannot be reached or refuses a step: an unknown host, a refused key, a changed host
    key, a full disk, a board without ARM-CL, a run that fails or times out; `where` is user@host:port."""


def first_line(text: str) -> str:
    """The first line of a tool's output that says something (its error, where a line says so: a
    compiler's ``error:``, a shell's ``No such file``), cut to a readable length."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    flagged = [line for line in lines if "error" in line.lower() or "no such" in line.lower()]
    return (flagged or lines or ["no output"])[0][:300]
