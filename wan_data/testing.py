"""The stage contract, public: the check every wan_data stage's tests run, and yours can.

A stage honours one contract whatever it does to good items (torchdata.nodes style: one shared
helper every test calls).

A stage is a :class:`~wan_data.stages.Stage` object (``stage(items, context)``: options bound
at construction) or a stage function ``stage(items, *, policy, **options) -> Iterator``.
Whatever it does to good items,
at its boundary it must behave the same way as every other stage: empty in gives empty out,
:class:`~wan_data.items.Failed` items pass through untouched, ``None`` and stray objects become
``Failed(reason="invalid_item")`` instead of crossing the boundary, the output is deterministic
and survives pickling (DataLoader workers ship items to the main process by pickle).

Usage from a stage's tests (the library's own, or a user's stage)::

    from wan_data.testing import check_stage_contract

    def test_probe_contract(corpus):
        check_stage_contract(Probe(ProbeLimits()), [source_a, source_b])

A stage object must also pickle (DataLoader workers receive the dataset, stages included, by
pickle) with the same :meth:`~wan_data.stages.Stage.identity` (the sample index and the latent
cache key on it).

The checks raise :class:`AssertionError` explicitly (never through ``assert`` statements), so
they hold under ``python -O`` too.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import torch

from wan_data.failures.policy import ErrorPolicy
from wan_data.items import Failed

__all__ = ["check_stage_contract", "fingerprint", "invalid_inputs", "passthrough_failed"]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(message)


class _TensorPrint:
    """A tensor stand-in whose ``==`` is :func:`torch.equal` plus dtype, shape and device."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor.detach()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _TensorPrint):
            return NotImplemented
        a, b = self.tensor, other.tensor
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and a.device == b.device
            and bool(torch.equal(a, b))
        )

    def __hash__(self) -> int:  # pragma: no cover - fingerprints are compared, not hashed
        return hash((str(self.tensor.dtype), tuple(self.tensor.shape)))

    def __repr__(self) -> str:
        return f"tensor{tuple(self.tensor.shape)} {self.tensor.dtype}"


def fingerprint(value: Any) -> Any:
    """A structure that compares with ``==`` the way stage outputs should be compared.

    Dataclass ``==`` breaks on tensor fields (``tensor == tensor`` is a tensor, whose truth value
    is ambiguous), so dataclasses are turned into ``(class name, ((field, fingerprint), ...))``
    over their ``compare=True`` fields, which is what their own ``==`` would compare, and tensors
    into an object whose ``==`` is :func:`torch.equal`. Containers are walked recursively.

    Args:
        value: any stage output (an item, a list of items, a tensor, a plain value).

    Returns:
        A nested tuple / dict structure equal for equal outputs.
    """
    if isinstance(value, torch.Tensor):
        return _TensorPrint(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__qualname__,
            tuple(
                (f.name, fingerprint(getattr(value, f.name)))
                for f in dataclasses.fields(value)
                if f.compare
            ),
        )
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(fingerprint(v) for v in value))
    if isinstance(value, dict):
        return {k: fingerprint(v) for k, v in value.items()}
    return value


def passthrough_failed() -> Failed:
    """An upstream failure, as a stage would receive it from an earlier stage."""
    return Failed(
        key="upstream/failed.mp4",
        path="/data/upstream/failed.mp4",
        stage="upstream",
        reason="unreadable",
        error_type="RuntimeError",
        message="file ('/data/upstream/failed.mp4') could not be opened. re-encode it.",
        attempts=2,
    )


def invalid_inputs() -> list[Any]:
    """Objects no stage accepts: ``None``, a bare ``object()`` and an ``int``."""
    return [None, object(), 7]


def _run(
    stage: Callable[..., Iterator[Any]],
    items: list[Any],
    policy_kw: str,
    kwargs: dict[str, Any],
) -> list[Any]:
    from wan_data.failures.mechanism import StageContext
    from wan_data.stages.base import Stage

    # A one-shot iterator, not a list: stages must not rely on len() or a second pass.
    if isinstance(stage, Stage):
        return list(stage(iter(items), StageContext(policy=ErrorPolicy()), **kwargs))
    out = stage(iter(items), **{policy_kw: ErrorPolicy()}, **kwargs)
    return list(out)


def check_stage_contract(
    stage: Callable[..., Iterator[Any]],
    good_inputs: list[Any],
    /,
    *,
    policy_kw: str = "policy",
    **kwargs: Any,
) -> None:
    """Assert that ``stage`` honours the stage contract on ``good_inputs``.

    The stage is called as ``stage(iter(items), policy=ErrorPolicy(), **kwargs)`` several times
    (pass a fresh-per-call resource through ``kwargs`` only if it tolerates reuse) and must:

    (a) turn an empty input into an empty output;
    (b) pass a :class:`Failed` item through untouched: the very same object, exactly once;
    (c) be deterministic: two runs on the same inputs give equal outputs (compared with
        :func:`fingerprint`: tensors with :func:`torch.equal`, dataclasses field by field);
    (d) never let ``None`` or a wrongly typed object (``object()``, an ``int``) cross the
        boundary: each becomes exactly one ``Failed`` with ``reason == "invalid_item"`` and
        ``stage`` set, and the outputs of the good inputs are unchanged by their presence;
    (e) yield only items that are a ``Failed`` or not ``None``;
    (f) yield outputs (the ``Failed`` ones included) that survive a pickle round trip equal.

    ``stage`` and ``good_inputs`` are positional-only, so ``kwargs`` may carry options of the
    same names (``map_stage`` takes ``stage="name"``).

    Args:
        stage: the stage function (or a bound ``__call__`` of a stage object).
        good_inputs: at least one valid input item of the stage; the outputs they give may
            include ``Failed`` items (a contract check does not judge the stage's work).
        policy_kw: name of the keyword through which the stage takes its
            :class:`~wan_data.failures.policy.ErrorPolicy`.
        **kwargs: further keyword options passed to every call (e.g. ``options=...``).

    A :class:`~wan_data.stages.Stage` object is called as ``stage(iter(items), context)``
    with a fresh :class:`~wan_data.failures.mechanism.StageContext` per call, and must also

    (g) survive a pickle round trip with the same ``identity()``.

    Raises:
        AssertionError: naming the clause, (a) to (g), that the stage breaks.
    """
    from wan_data.stages.base import Stage

    _check(bool(good_inputs), "check_stage_contract needs at least one good input")
    name = getattr(stage, "__qualname__", repr(stage))
    if isinstance(stage, Stage):
        try:
            copy = pickle.loads(pickle.dumps(stage))
        except Exception as exc:
            raise AssertionError(f"(g) {name}: the stage does not pickle: {exc!r}") from exc
        _check(
            copy.identity() == stage.identity(),
            f"(g) {name}: identity changed in a pickle round trip: "
            f"{stage.identity()!r} != {copy.identity()!r}",
        )

    # (a) empty in, empty out.
    empty = _run(stage, [], policy_kw, kwargs)
    _check(empty == [], f"(a) {name}: empty input gave {empty!r}")

    # (c) determinism, and the reference output of the good inputs.
    first = _run(stage, list(good_inputs), policy_kw, kwargs)
    second = _run(stage, list(good_inputs), policy_kw, kwargs)
    _check(
        fingerprint(first) == fingerprint(second),
        f"(c) {name}: two runs on the same inputs differ:\n{first!r}\n{second!r}",
    )

    # (b) a Failed passes through untouched, exactly once.
    upstream = passthrough_failed()
    middle = len(good_inputs) // 2
    mixed = [*good_inputs[:middle], upstream, *good_inputs[middle:]]
    with_failed = _run(stage, mixed, policy_kw, kwargs)
    same = [o for o in with_failed if o is upstream]
    _check(len(same) == 1, f"(b) {name}: the upstream Failed came out {len(same)} times")
    _check(upstream == passthrough_failed(), f"(b) {name}: the upstream Failed was modified")
    rest = [o for o in with_failed if o is not upstream]
    _check(
        fingerprint(rest) == fingerprint(first),
        f"(b) {name}: an upstream Failed changed the other outputs",
    )

    # (d) None and stray objects become Failed(reason="invalid_item"), one each.
    bad = invalid_inputs()
    polluted = [bad[0], *good_inputs[:middle], bad[1], *good_inputs[middle:], bad[2]]
    outputs = _run(stage, polluted, policy_kw, kwargs)
    leaked = [o for o in outputs if any(o is b for b in bad)]
    _check(not leaked, f"(d) {name}: invalid inputs crossed the boundary as-is: {leaked!r}")
    invalid = [o for o in outputs if isinstance(o, Failed) and o.reason == "invalid_item"]
    _check(
        len(invalid) == len(bad),
        f"(d) {name}: expected {len(bad)} Failed(reason='invalid_item'), got {invalid!r}",
    )
    _check(all(f.stage and f.message for f in invalid), f"(d) {name}: {invalid!r}")
    others = [o for o in outputs if not (isinstance(o, Failed) and o.reason == "invalid_item")]
    _check(
        fingerprint(others) == fingerprint(first),
        f"(d) {name}: invalid inputs changed the outputs of the good ones",
    )

    # (e) nothing None comes out of any run.
    for run in (first, with_failed, outputs):
        _check(
            all(isinstance(o, Failed) or o is not None for o in run),
            f"(e) {name}: None in the output {run!r}",
        )

    # (f) everything survives pickling (DataLoader workers pickle what they yield).
    for run in (first, with_failed, outputs):
        try:
            restored = pickle.loads(pickle.dumps(run))
        except Exception as exc:
            raise AssertionError(f"(f) {name}: outputs do not pickle: {exc!r}") from exc
        _check(
            fingerprint(restored) == fingerprint(run),
            f"(f) {name}: outputs changed in a pickle round trip",
        )
