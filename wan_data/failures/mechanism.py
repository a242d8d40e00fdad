"""The shared mechanism that turns a per-item function into a stage.

Every stage is ``stage(items, *, policy, context, ...) -> Iterator``: it passes :class:`Failed`
items through untouched, rejects anything that is not its input type (so no ``None`` or stray
object ever crosses a stage boundary), runs its function under the error policy, counts in/out/
failed/seconds, feeds the stage's circuit breaker and traces the flow at debug level. Writing
this once keeps every stage's error handling identical.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from wan_data.errors import SampleError, format_error
from wan_data.failures.breaker import BreakerConfig, CircuitBreaker
from wan_data.failures.policy import Action, ErrorPolicy
from wan_data.items import Failed
from wan_data.observe.metrics import Metrics

if TYPE_CHECKING:
    from wan_data.observe.watchdog import StallWatchdog

__all__ = [
    "StageContext",
    "clean_message",
    "drop_failed",
    "failure_hint",
    "map_stage",
    "partial_failure",
]

logger = logging.getLogger("wan_data")
In = TypeVar("In")
Out = TypeVar("Out")

_HINTS = {
    "unreadable": "the file is empty, truncated, not a media file or has a damaged header; "
    "re-encode it or remove it",
    "no_video_stream": "the file has no video stream (audio only?); remove it",
    "decode_error": "the file is damaged; re-encode it, e.g. `ffmpeg -i IN -c:v libx264 OUT.mp4`",
    "missing": "the file vanished, is a dangling symlink or a symlink loop; fix the link or "
    "remove the entry",
    "io_transient": "the machine, not the file, failed (out of file descriptors or memory, or "
    "an I/O error of the storage) after retries; skipped this run only and never ledgered, so "
    "the next run tries it again; raise `ulimit -n`, free memory or check the mount",
    "too_large": "the image declares more pixels than can be decoded safely; downscale it "
    "first or remove it",
    "permission_denied": "make the file readable by the training user",
    "not_a_file": "the path is a directory or special file; rename it or remove the entry",
    "unexpected_error": "this is probably a wan_data bug; please report it with this message",
    "invalid_item": "a stage received an item of the wrong type; this is a pipeline wiring bug",
}


_SOURCE_LOCATION = re.compile(r"^(?:\w+, )?\S+\.(?:cpp|cc|c|h):\d+, ")


def clean_message(exc: BaseException) -> str:
    """The useful part of an exception's message, on one line.

    torchcodec prefixes messages with its C++ source location and appends a bug-report
    boilerplate for some conditions (audio-only files); neither helps the reader find the file.
    Notes added to the exception on its way up (``exc.add_note("listed at m.jsonl:2")``) are
    kept: they say where the failing input came from.
    """
    text = str(exc).strip()
    first = text.split("This should never happen")[0].strip()
    notes = [str(n) for n in getattr(exc, "__notes__", ())]
    return " ".join(" ".join([_SOURCE_LOCATION.sub("", first or text), *notes]).split())


def failure_hint(reason: str) -> str:
    """The fix to suggest for a skip reason (empty when there is nothing general to say)."""
    return _HINTS.get(reason, "")


@dataclass
class StageContext:
    """What every stage of one pipeline shares: the error policy, counters, breakers, the
    stall watchdog and the epoch. Stages take their options at construction and this at call
    time, so the same stage objects serve every epoch, worker and rank."""

    metrics: Metrics = field(default_factory=Metrics)
    policy: ErrorPolicy = field(default_factory=ErrorPolicy)
    breaker_config: BreakerConfig = field(default_factory=BreakerConfig)
    epoch: int = 0
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    watchdog: StallWatchdog | None = None

    def breaker(self, stage: str, *, mandatory: bool = True) -> CircuitBreaker:
        """The circuit breaker of ``stage`` in this process, made on first use from
        ``breaker_config`` (``mandatory`` is taken then); every later call returns the same one."""
        if stage not in self.breakers:
            self.breakers[stage] = CircuitBreaker(
                stage, config=self.breaker_config, mandatory=mandatory
            )
        return self.breakers[stage]


def _key_and_path(item: Any) -> tuple[str, str]:
    """Identity of any object, for messages; never raises (the object may be malformed)."""
    try:
        key = getattr(item, "key", None)
        path = getattr(item, "path", None)
        shown = str(key) if key is not None else repr(item)[:80]
        return shown, str(path) if path else ""
    except Exception:
        return f"<unprintable {type(item).__name__}>", ""


def map_stage(
    items: Iterable[In | Failed],
    fn: Callable[[In], Sequence[Out | Failed]],
    *,
    stage: str,
    accepts: type | tuple[type, ...],
    policy: ErrorPolicy | None = None,
    context: StageContext | None = None,
    mandatory: bool = True,
    quiet_reasons: Collection[str] = (),
) -> Iterator[Out | Failed]:
    """Apply ``fn`` to every accepted item under ``policy``; see the module docstring.

    Args:
        items: upstream items; :class:`Failed` ones pass through untouched.
        fn: the per-item work; returns every output of one input (a list, so a retry redoes
            the whole item), and may itself return :class:`Failed` for partial failures.
        stage: the stage name used in counters, messages and the breaker.
        accepts: the input type(s); anything else becomes ``Failed(reason="invalid_item")``.
        policy: decides skip / retry / fatal per exception (default: the context's).
        context: policy, counters and breakers; a private one is made when omitted.
        mandatory: whether a tripped breaker stops the run (``True``), or the stage is
            optional: a pass-through stage (a cache write) whose items continue unchanged
            while its breaker is open, until a trial after the cooldown succeeds, and when
            the policy says an error is only a warning.
        quiet_reasons: reasons of the ``Failed`` items ``fn`` returns that are logged at DEBUG
            instead of WARNING (the stage logs its own summary: the ledger's known-bad skips,
            warned about when the files first failed). They are counted as every skip is.
    """
    ctx = context if context is not None else StageContext()
    policy = policy if policy is not None else ctx.policy
    stats = ctx.metrics.stage(stage)
    breaker = ctx.breaker(stage, mandatory=mandatory)
    for item in items:
        if isinstance(item, Failed):
            logger.debug("stage=%s in=Failed key=%s", stage, item.key)
            logger.debug("stage=%s out=Failed key=%s", stage, item.key)
            yield item
            continue
        key, path = _key_and_path(item)
        if not isinstance(item, accepts):
            failed = Failed(
                key=key,
                path=path,
                stage=stage,
                reason="invalid_item",
                error_type="TypeError",
                message=format_error(
                    f"input of stage '{stage}'",
                    type(item).__name__,
                    f"must be {_type_names(accepts)}",
                    failure_hint("invalid_item"),
                    path=path or None,
                    stage=stage,
                ),
            )
            stats.items_in += 1
            _count_failure(stats, failed)
            logger.debug("stage=%s in=%s key=%s", stage, type(item).__name__, key)
            logger.warning("%s", failed.message, extra=_log_fields(failed))
            logger.debug("stage=%s out=Failed key=%s", stage, key)
            yield failed
            continue
        stats.items_in += 1
        logger.debug("stage=%s in=%s key=%s", stage, type(item).__name__, key)
        if not mandatory and not breaker.allow():
            stats.bypassed += 1
            logger.debug("stage=%s out=%s key=%s (bypassed)", stage, type(item).__name__, key)
            yield item  # type: ignore[misc]  # optional stages pass their input through
            continue
        started = time.perf_counter()
        watch = (
            ctx.watchdog.working(stage, path or key)
            if ctx.watchdog is not None
            else contextlib.nullcontext()
        )
        with watch:
            result, exc, decision, attempts = policy.call(
                functools.partial(_run_one, fn, item), stage=stage, key=key, path=path
            )
        stats.seconds += time.perf_counter() - started
        if exc is None:
            assert result is not None
            clean = True
            for out in result:
                logger.debug(
                    "stage=%s out=%s key=%s", stage, type(out).__name__, getattr(out, "key", "?")
                )
                if isinstance(out, Failed):
                    clean = False
                    _count_failure(stats, out)
                    logger.log(
                        logging.DEBUG if out.reason in quiet_reasons else logging.WARNING,
                        "skipped %s at stage=%s: %s",
                        out.path,
                        out.stage,
                        out.message,
                        extra=_log_fields(out),
                    )
                    yield out  # before the breaker may raise, so the report keeps it
                    breaker.record_failure(out)
                else:
                    stats.items_out += 1
                    yield out
            if clean:
                breaker.record_success()
            continue
        assert decision is not None
        if decision.action is Action.WARN and not mandatory:
            stats.warned += 1
            ctx.metrics.warnings[f"{stage}:{decision.reason}"] += 1
            logger.debug("stage=%s out=%s key=%s (after warning)", stage, type(item).__name__, key)
            yield item  # type: ignore[misc]
            continue
        if isinstance(exc, SampleError) and str(exc).strip():
            message = str(exc)
        else:
            message = format_error(
                f"{stage} of file",
                path,
                f"failed with {type(exc).__name__}: {clean_message(exc)[:500]}",
                failure_hint(decision.reason),
                stage=stage,
            )
        failed = Failed(
            key=key,
            path=path,
            stage=stage,
            reason=decision.reason,
            error_type=type(exc).__name__,
            message=message,
            attempts=attempts,
        )
        _count_failure(stats, failed)
        logger.warning(
            "skipped %s at stage=%s reason=%s: %s",
            path,
            stage,
            failed.reason,
            message,
            extra=_log_fields(failed),
        )
        logger.debug("stage=%s out=Failed key=%s", stage, key)
        yield failed  # before the breaker may raise, so the report keeps it
        breaker.record_failure(failed)


def partial_failure(key: str, path: str, stage: str, error: SampleError) -> Failed:
    """One failed output among several good ones of the same input (a clip of a video whose
    other clips decoded, one clip of an encode batch that ran out of memory).

    A stage's function returns it next to its good outputs instead of raising, which would
    lose them; :func:`map_stage` then counts, logs and feeds it to the breaker like any skip.
    This is the only place outside :func:`map_stage` that makes a ``Failed``.
    """
    return Failed(
        key=key,
        path=path,
        stage=stage,
        reason=error.reason,
        error_type=type(error).__name__,
        message=str(error) if str(error).strip() else f"{stage} failed ({error.reason})",
    )


def _log_fields(failed: Failed) -> dict[str, object]:
    """The structured fields of a skip (columns of the JSON-lines log, see ``logs.py``)."""
    return {
        "stage": failed.stage,
        "key": failed.key,
        "path": failed.path,
        "reason": failed.reason,
        "error_type": failed.error_type,
    }


def _run_one(fn: Callable[[In], Sequence[Out | Failed]], item: In) -> list[Out | Failed]:
    return list(fn(item))


def _count_failure(stats: Any, failed: Failed) -> None:
    stats.failed += 1
    stats.by_reason[failed.reason] += 1
    stats.by_error_type[failed.error_type] += 1


def _type_names(accepts: type | tuple[type, ...]) -> str:
    types = accepts if isinstance(accepts, tuple) else (accepts,)
    return " or ".join(t.__name__ for t in types)


def drop_failed(items: Iterable[Any], *, context: StageContext | None = None) -> Iterator[Any]:
    """Sink for failures: record each :class:`Failed` in the report and drop it (and ``None``)."""
    ctx = context if context is not None else StageContext()
    for item in items:
        if isinstance(item, Failed):
            ctx.metrics.record_failed(item, epoch=ctx.epoch)
            continue
        if item is None:
            ctx.metrics.warnings["none_item_dropped"] += 1
            continue
        yield item
