"""Stage ``ledger``: a source the ledger knows to be bad, and unchanged, is skipped unopened.

The store (:class:`~wan_data.failures.ledger.Ledger`: which files failed, with the size and
mtime they had, shared by processes) lives apart from this stage because it is not stage work:
the dataset writes it after construction (records file-level failures, resolves files that now
pass) and users inspect and compact it, while this stage only asks it about each source. The stage
sits between collect and probe: probing a broken file costs as much as probing a good one, so a
known-bad file becomes a :class:`~wan_data.items.Failed` before anything opens it, and its skips
are summarised in one warning per pass instead of one line per file. See docs/ledger.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from wan_data.errors import format_error
from wan_data.failures.ledger import Ledger, LedgerEntry
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Failed, Source
from wan_data.stages.base import Stage

__all__ = ["KNOWN_BAD_REASON", "STAGE", "skip_known_bad"]

logger = logging.getLogger("wan_data")

STAGE = "ledger"

# The reason of the Failed that the ledger stage yields. It is one of breaker.FILTER_REASONS:
# a known-bad file is an expected skip, so a dataset that is mostly known-bad must not trip the
# stage's circuit breaker, while a bug inside the stage (an ``unexpected_error``) still does.
KNOWN_BAD_REASON = "known_bad"


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


_SUMMARY_EXAMPLES = 3  # file paths named in the one summary warning of a construction


def skip_known_bad(
    items: Iterable[Source | Failed],
    *,
    policy: ErrorPolicy,
    context: StageContext | None = None,
    ledger: Ledger | None,
    retry_failed: bool = False,
) -> Iterator[Source | Failed]:
    """Stage ``ledger``: a known-bad, unchanged source becomes a ``Failed`` before it is opened.

    Put it between collect and probe. The ``Failed`` has ``stage="ledger"``,
    ``reason="known_bad"`` (a breaker filter reason: known-bad skips are expected, so even a
    dataset that is mostly known-bad does not trip this stage's circuit breaker), the original
    ``error_type``, and a message naming the original stage, reason and time.

    Known-bad skips are logged as one WARNING per pass (how many, the first few paths and how
    to retry them), emitted when this generator is exhausted or closed, with each file's
    message at DEBUG level: the files were recorded, and warned about, when they first failed,
    and a dataset with thousands of them would otherwise repeat thousands of identical lines
    on every construction. Each skip is still a ``Failed`` counted in the stage's report.

    Args:
        items: sources (and upstream failures, passed through).
        policy: decides skip / retry / fatal (the stage itself only ``stat``-s).
        context: counters and breakers.
        ledger: the ledger to consult; ``None`` passes every source.
        retry_failed: pass every source, known-bad or not, so each is tried again (after an
            FFmpeg upgrade, say); the caller resolves those that now pass.
    """
    if ledger is not None and retry_failed:
        logger.info("ledger %s: retry_failed=True, known-bad files are tried again", ledger.path)
    check = ledger if ledger is not None and not retry_failed else None
    if check is None:
        yield from map_stage(
            items, _pass, stage=STAGE, accepts=Source, policy=policy, context=context
        )
        return
    skipped = 0  # known-bad skips of this pass, for the summary
    examples: list[str] = []  # the first few of their paths

    def one(source: Source) -> list[Source | Failed]:
        nonlocal skipped
        entry = check.known_bad(source.path)
        if entry is None:
            return [source]
        skipped += 1
        if len(examples) < _SUMMARY_EXAMPLES:
            examples.append(source.path)
        return [_known_bad_failure(source, entry, check)]

    try:
        yield from map_stage(
            items,
            one,
            stage=STAGE,
            accepts=Source,
            policy=policy,
            context=context,
            quiet_reasons=(KNOWN_BAD_REASON,),
        )
    finally:
        if skipped:
            _warn_known_bad(check, skipped, examples)


def _pass(source: Source) -> list[Source | Failed]:
    return [source]


def _known_bad_failure(source: Source, entry: LedgerEntry, ledger: Ledger) -> Failed:
    message = format_error(
        "file",
        source.path,
        f"failed before at {entry.stage}: {entry.reason} ({_when(entry.time)}) and has "
        "not changed since",
        f"Pass retry_failed=True, or change the file, to try it again (the first error is "
        f"recorded in {ledger.path})",
        stage=STAGE,
    )
    return Failed(
        key=source.key,
        path=source.path,
        stage=STAGE,
        reason=KNOWN_BAD_REASON,
        error_type=entry.error_type or "SampleError",
        message=message,
    )


def _warn_known_bad(ledger: Ledger, count: int, examples: list[str]) -> None:
    """The one summary WARNING of a pass that skipped ``count`` files as known-bad."""
    first = ", ".join(examples)
    more = ", ..." if count > len(examples) else ""
    logger.warning(
        "%s",
        format_error(
            f"ledger {ledger.path}",
            f"{count} known-bad file(s)",
            f"skipped without opening them (first: {first}{more})",
            "Pass retry_failed=True, or change the files, to try them again; each file's "
            "first error is in the ledger and logged at debug level",
            stage=STAGE,
        ),
    )


class SkipKnownBad(Stage[Source, Source]):
    """Stage ``ledger``: ``Source → Source``, or ``Failed(reason="known_bad")`` for a file the
    ledger knows to be bad and that has not changed since; see :func:`skip_known_bad`."""

    name = STAGE

    def __init__(self, ledger: Ledger | None, *, retry_failed: bool = False) -> None:
        self.ledger = ledger
        self.retry_failed = retry_failed

    def __call__(
        self, items: Iterable[Source | Failed], context: StageContext | None = None
    ) -> Iterator[Source | Failed]:
        ctx = context if context is not None else StageContext()
        return skip_known_bad(
            items,
            policy=ctx.policy,
            context=ctx,
            ledger=self.ledger,
            retry_failed=self.retry_failed,
        )

    def identity(self) -> str:
        path = str(self.ledger.path) if self.ledger is not None else None
        return f"ledger:v{self.version}:{path}:{self.retry_failed}"
