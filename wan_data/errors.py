"""Exception types and the one message format every error in wan_data follows.

Messages read ``<what> (<value>) <rule>. <hint>`` and name the file and stage where there is one,
because the person reading them is usually looking at a log from a multi-hour run and needs to
know which file to fix, not which line of wan_data raised.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "FatalError",
    "PipelineHealthError",
    "SampleError",
    "TransientError",
    "WanDataError",
    "format_error",
]


def format_error(
    what: str,
    value: object,
    rule: str,
    hint: str = "",
    *,
    path: str | None = None,
    stage: str | None = None,
) -> str:
    """Build a message in the project's ``<what> (<value>) <rule>. <hint>`` format.

    Args:
        what: the thing that is wrong (a parameter, a file property).
        value: its offending value; shown with ``repr`` for strings so blanks are visible.
        rule: what the value should satisfy.
        hint: how to fix it.
        path: the source file, when the error concerns one.
        stage: the pipeline stage, when the error happened in one.
    """
    shown = repr(value) if isinstance(value, str) else str(value)
    text = f"{what} ({shown}) {rule.rstrip('.')}."
    if hint:
        text += f" {hint.rstrip('.')}."
    where = []
    if stage:
        where.append(f"stage={stage}")
    if path:
        where.append(f"file={path}")
    if where:
        text += f" [{' '.join(where)}]"
    return text


class WanDataError(Exception):
    """Base class of every error wan_data raises on purpose."""


class ConfigError(WanDataError, ValueError):
    """Fatal configuration problems, all of them at once.

    Raised at construction so a bad option costs seconds, not a failed job hours later. The
    message lists every problem found, not only the first, so one edit fixes the config.
    """

    def __init__(self, problems: str | Sequence[str]) -> None:
        if isinstance(problems, str):
            self.problems: tuple[str, ...] = (problems,)
            message = problems
        else:
            self.problems = tuple(problems)
            count = len(self.problems)
            head = f"{count} configuration problem{'s' if count != 1 else ''}:"
            message = "\n".join([head, *(f"  - {p}" for p in self.problems)])
        super().__init__(message)


class FatalError(WanDataError):
    """An environment fault that no amount of skipping fixes (e.g. FFmpeg libraries missing)."""


class SampleError(WanDataError):
    """One sample cannot be used; the pipeline records it and moves on.

    Args:
        message: the full formatted message.
        reason: a short machine-readable tag (``too_short``, ``unreadable``...) used by the
            report and the ledger to group skips.
    """

    def __init__(self, message: str, reason: str = "sample_error") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[type[SampleError], tuple[str, str]]:
        return (type(self), (str(self), self.reason))


class TransientError(WanDataError):
    """A failure worth retrying (a flaky network filesystem, a busy device)."""


class PipelineHealthError(WanDataError):
    """A mandatory stage fails too often for the cause to be individual bad files.

    Raised by the circuit breaker: a systemic fault (missing codec, wrong mount, a bug) must stop
    the run with the top causes instead of silently skipping the whole dataset.
    """
