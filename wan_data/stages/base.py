"""What a stage is: options bound once, then ``items in → items | Failed out``.

Every stage of wan_data, and every stage a user writes, has the same shape (webdataset's
"iterator → iterator", options bound first)::

    stage = Probe(limits, threads=4)           # options, checked here
    out = stage(items, context)                 # Iterator[Probed | Failed]

``context`` (a :class:`~wan_data.failures.mechanism.StageContext`) carries what the stages of
one pipeline share: the error policy, the counters, the circuit breakers, the stall watchdog
and the epoch. A per-item stage (:class:`MapStage`) runs its work through
:func:`~wan_data.failures.mechanism.map_stage`, the one mechanism that turns exceptions into
:class:`~wan_data.items.Failed` records, so a user's stage gets retries, the breaker, counters
and the watchdog without writing any of it. :func:`wan_data.testing.check_stage_contract`
checks a stage keeps the contract.

``identity()`` says what a stage's output depends on. The dataset puts the identities of its
index stages into the sample-index fingerprint and those of its clip stages into the latent
cache keys, so changing a stage (its name, its options, or its ``version``) never serves
results made by the old one.

``varies_by_epoch`` says whether a stage's output depends on the context's epoch (a random draw
seeded per epoch, like the augmentations): the latent cache then keys each cached variant of a
clip apart, since the cache pass runs variant ``v`` at epoch ``v``. Stages are deterministic by
default (``False``): a stage that reads ``context.epoch`` must set it to ``True``, or every
variant of a clip whose window and crop cannot vary shares one key, and one draw.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar, cast

from wan_data.errors import SampleError, format_error
from wan_data.failures.mechanism import StageContext, map_stage
from wan_data.items import Failed

__all__ = ["Filter", "Map", "MapStage", "Stage", "compose"]

In = TypeVar("In")
Out = TypeVar("Out")


class Stage(abc.ABC, Generic[In, Out]):
    """A pipeline stage; subclasses set ``name`` and implement :meth:`__call__`.

    Attributes:
        name: the stage's name in counters, skips, the breaker and log lines.
        version: bump it when the stage's logic changes: its results cached by earlier runs
            (sample index, latent cache) then stop being reused.
        varies_by_epoch: ``True`` when the output depends on ``context.epoch`` (a draw seeded
            per epoch): each cached variant of a clip then gets its own cache key. A class
            attribute, not an option: it is not part of :meth:`identity`.
    """

    name: str = "stage"
    version: int = 1
    varies_by_epoch: bool = False

    @abc.abstractmethod
    def __call__(
        self, items: Iterable[In | Failed], context: StageContext | None = None
    ) -> Iterator[Out | Failed]:
        """Yield one or more outputs per input item, and every ``Failed`` input unchanged."""

    def identity(self) -> str:
        """What the output depends on: class, name, version and the bound options.

        The default covers the stage's public attributes by ``repr``; a stage holding
        something whose ``repr`` changes between runs (a function's address) should override
        it.
        """
        options = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        kind = f"{type(self).__module__}.{type(self).__qualname__}"
        return f"{kind}:{self.name}:v{self.version}:{sorted(options.items(), key=str)!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class MapStage(Stage[In, Out]):
    """A stage made of one function per item, run under the error policy.

    Subclasses set ``accepts`` (the input type(s); anything else becomes
    ``Failed(reason="invalid_item")``) and implement :meth:`process` (or :meth:`process_in`,
    which also receives the context), which returns every
    output of one input (usually one) or raises; the mechanism retries, skips or stops as the
    policy decides. ``mandatory = False`` makes the stage optional: while its breaker is open
    items pass through unchanged.
    """

    accepts: type | tuple[type, ...] = object
    mandatory: bool = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.process is MapStage.process and cls.process_in is MapStage.process_in:
            # Found when the class is defined, not as a skip of every item at run time.
            raise TypeError(f"{cls.__qualname__} must override process() or process_in()")

    def process(self, item: In) -> Sequence[Out | Failed]:
        """Every output of ``item`` (or raise)."""
        return self.process_in(item, StageContext())

    def process_in(self, item: In, context: StageContext) -> Sequence[Out | Failed]:
        """:meth:`process` with the pipeline's context, for work that depends on it (the
        epoch picks a sample's window and crop); by default the context is not needed."""
        return self.process(item)

    def __call__(
        self, items: Iterable[In | Failed], context: StageContext | None = None
    ) -> Iterator[Out | Failed]:
        ctx = context if context is not None else StageContext()
        return map_stage(
            items,
            functools.partial(self.process_in, context=ctx),
            stage=self.name,
            accepts=self.accepts,
            context=ctx,
            mandatory=self.mandatory,
        )


def _function_identity(fn: Callable[..., Any]) -> str:
    """A function by where it is defined (its address changes every run)."""
    module = getattr(fn, "__module__", "?")
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    if dataclasses.is_dataclass(fn) or not hasattr(fn, "__qualname__"):
        return f"{module}.{name}:{fn!r}"
    return f"{module}.{name}"


class Filter(MapStage[In, In]):
    """Keep the items ``predicate`` accepts; the others are skipped as ``filtered``.

    A filtered item becomes a :class:`~wan_data.items.Failed` with reason ``filtered`` (one of
    the breaker's filter reasons: filtering half of a dataset on purpose never stops a run),
    this stage's name and ``why``, so the report, the ledger-free scan and the logs say which
    filter dropped which file. Use it as an index stage on probed metadata::

        long_enough = Filter(lambda p: p.metadata.duration >= 2.0, name="min_duration",
                             why="shorter than 2 s")
        WanVideoDataset("data/", index_stages=[long_enough])

    Args:
        predicate: ``True`` keeps the item; an exception is handled by the error policy
            (a broken score file is a skip with its own reason, not a crash).
        name: the stage name (counters, skips, the sample-index fingerprint).
        why: the rule, for the skip message ("shorter than 2 s").
        accepts: the input type(s) (default: :class:`~wan_data.items.Probed`).
        version: bump when the predicate's logic changes (see :meth:`Stage.identity`).
    """

    def __init__(
        self,
        predicate: Callable[[Any], bool],
        *,
        name: str,
        why: str = "",
        accepts: type | tuple[type, ...] | None = None,
        version: int = 1,
    ) -> None:
        from wan_data.items import Probed

        if not callable(predicate):
            raise TypeError(format_error("Filter predicate", repr(predicate), "must be callable"))
        self.predicate = predicate
        self.name = name
        self.why = why
        self.accepts = accepts if accepts is not None else Probed
        self.version = version

    def process(self, item: In) -> list[In]:
        if self.predicate(item):
            return [item]
        raise SampleError(
            format_error(
                f"{getattr(item, 'key', type(item).__name__)}",
                getattr(item, "path", ""),
                f"was filtered out by stage '{self.name}'" + (f": {self.why}" if self.why else ""),
                "change or remove the filter to keep it",
                stage=self.name,
            ),
            reason="filtered",
        )

    def identity(self) -> str:
        return f"Filter:{self.name}:v{self.version}:{_function_identity(self.predicate)}:{self.why}"


class Map(MapStage[In, Out]):
    """Apply ``fn`` to every item (a clip transform after decode, a metadata annotator...).

    ``fn`` returns the new item, which must be an instance of ``returns`` (default: the input
    type) — a transform returning ``None`` or a tensor instead of a ``Clip`` is a skip with
    reason ``invalid_item``, never a broken batch. Randomness must come from the item (e.g.
    :func:`~wan_data.media.sampling.sample_rng` with the clip's key and the context's epoch),
    never the global RNG, or samples depend on the worker that made them.

    Args:
        fn: the per-item function.
        name: the stage name.
        accepts: the input type(s) (default: :class:`~wan_data.items.Clip`).
        returns: the required output type (default: ``accepts``).
        version: bump when ``fn``'s logic changes (see :meth:`Stage.identity`).
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        name: str,
        accepts: type | tuple[type, ...] | None = None,
        returns: type | tuple[type, ...] | None = None,
        version: int = 1,
    ) -> None:
        from wan_data.items import Clip

        if not callable(fn):
            raise TypeError(format_error("Map fn", repr(fn), "must be callable"))
        self.fn = fn
        self.name = name
        self.accepts = accepts if accepts is not None else Clip
        self.returns = returns if returns is not None else self.accepts
        self.version = version

    def process(self, item: In) -> list[Out]:
        out = self.fn(item)
        if not isinstance(out, self.returns):
            raise SampleError(
                format_error(
                    f"output of stage '{self.name}'",
                    type(out).__name__,
                    f"must be {_names(self.returns)}",
                    "return the transformed item (e.g. dataclasses.replace(clip, frames=...))",
                    path=getattr(item, "path", None) or None,
                    stage=self.name,
                ),
                reason="invalid_item",
            )
        return [cast(Out, out)]

    def identity(self) -> str:
        return f"Map:{self.name}:v{self.version}:{_function_identity(self.fn)}"


def _names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def compose(
    items: Iterable[Any], stages: Sequence[Stage[Any, Any]], context: StageContext | None = None
) -> Iterator[Any]:
    """Chain ``stages`` over ``items`` with one shared context (webdataset's ``compose``).

    Lazy: nothing runs until the result is iterated. Failures pass through every later
    stage unchanged; sink them with :func:`~wan_data.failures.mechanism.drop_failed`.
    """
    ctx = context if context is not None else StageContext()
    stream: Iterable[Any] = items
    for stage in stages:
        if not isinstance(stage, Stage):
            raise TypeError(
                format_error(
                    "stage",
                    repr(stage),
                    "must be a wan_data.stages.Stage",
                    "wrap a function with wan_data.stages.Map or Filter",
                )
            )
        stream = stage(stream, ctx)
    return iter(stream)
