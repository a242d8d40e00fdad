"""The groups that decide how a run goes, not which clips it yields: errors, latents (the VAE
and the cache), reuse (metadata cache, sample index, ledger), observe and workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from wan_data.config.base import ConfigGroup, PathLike, _is_int
from wan_data.config.fields import AUTO, Auto, option
from wan_data.config.values import (
    DTYPES,
    parse_dtype,
    parse_optional_float,
    parse_optional_int,
    show_dtype,
    show_optional,
)
from wan_data.errors import ConfigError, format_error
from wan_data.failures.breaker import BreakerConfig
from wan_data.failures.policy import ErrorPolicy
from wan_data.observe.alerts import Alert, AlertConfig
from wan_data.observe.metrics import MetricsCallback

__all__ = ["ErrorsConfig", "LatentsConfig", "ObserveConfig", "ReuseConfig", "WorkersConfig"]


@dataclass(frozen=True)
class ErrorsConfig(ConfigGroup):
    """What errors mean: the policy and the circuit breaker (see docs/errors.md)."""

    title: ClassVar[str] = "errors"

    policy: ErrorPolicy = option(
        default_factory=ErrorPolicy, help="the error policy object", commands=()
    )
    breaker_threshold: float | None = option(
        0.5,
        help="failure fraction that stops the run (none: no breaker)",
        parse=parse_optional_float,
        show=show_optional,
    )
    breaker_min_items: int = option(
        20, help="items a worker sees before the breaker may open", parse=int
    )

    def problems(self) -> list[str]:
        problems = []
        if not isinstance(self.policy, ErrorPolicy):
            problems.append(format_error("policy", repr(self.policy), "must be an ErrorPolicy"))
        try:
            self.breaker_config()
        except ConfigError as exc:
            problems += list(exc.problems)
        except TypeError as exc:
            problems.append(format_error("breaker options", str(exc), "must be numbers"))
        return problems

    def breaker_config(self) -> BreakerConfig:
        """The breaker these options describe (disabled when ``breaker_threshold`` is None)."""
        if self.breaker_threshold is None:
            return BreakerConfig(enabled=False)
        return BreakerConfig(
            threshold=self.breaker_threshold,
            min_items=self.breaker_min_items,
            window=max(100, self.breaker_min_items),
        )


@dataclass(frozen=True)
class LatentsConfig(ConfigGroup):
    """The VAE and the latent cache (see docs/cache.md); both or neither."""

    title: ClassVar[str] = "latents"
    paths: ClassVar[tuple[str, ...]] = ("vae", "cache_dir")

    vae: PathLike | None = option(
        None, help="local Wan VAE folder or Wan Diffusers repo", commands=("cache",)
    )
    cache_dir: PathLike | None = option(None, help="the latent cache folder", commands=("cache",))
    device: str | None = option(
        None, help="where the VAE runs (default: cuda when available)", commands=("cache",)
    )
    vae_dtype: torch.dtype = option(
        torch.float32,
        help="VAE compute dtype",
        commands=("cache",),
        parse=parse_dtype,
        show=show_dtype,
        choices=tuple(DTYPES),
    )
    latent_dtype: torch.dtype = option(
        torch.bfloat16,
        help="stored latent dtype",
        commands=("cache",),
        parse=parse_dtype,
        show=show_dtype,
        choices=tuple(DTYPES),
    )
    encode_batch_size: int = option(
        1, help="clips of one bucket per VAE call", commands=("cache",), parse=int
    )
    vae_subfolder: str | None = option(
        None, help="overrides the vae/ detection", commands=("cache",)
    )
    variations: int = option(
        1,
        help="cached variants per clip (random windows and crops)",
        commands=("cache",),
        parse=int,
    )
    prepare: str = option(
        "error",
        help="a missing cache entry: 'error' (with the command that fills it) or 'auto'",
        commands=(),
    )
    content_hash: bool = option(
        False, help="add each source's sha256 to its cache key", commands=("cache",)
    )

    def problems(self) -> list[str]:
        problems = []
        if (self.vae is None) != (self.cache_dir is None):
            given, missing = ("vae", "cache_dir") if self.vae is not None else ("cache_dir", "vae")
            problems.append(
                format_error(
                    given,
                    str(getattr(self, given)),
                    f"needs {missing} too",
                    "latents are encoded by the VAE into the cache folder; pass both",
                )
            )
        if not _is_int(self.variations) or self.variations < 1:
            problems.append(format_error("variations", self.variations, "must be an int >= 1"))
        if self.prepare not in ("error", "auto"):
            problems.append(format_error("prepare", self.prepare, "must be 'error' or 'auto'"))
        if not _is_int(self.encode_batch_size) or self.encode_batch_size < 1:
            problems.append(
                format_error("encode_batch_size", self.encode_batch_size, "must be an int >= 1")
            )
        for name in ("vae_dtype", "latent_dtype"):
            if not isinstance(getattr(self, name), torch.dtype):
                problems.append(format_error(name, getattr(self, name), "must be a torch.dtype"))
        return problems

    @property
    def enabled(self) -> bool:
        """Whether the latent cache is on: both ``vae`` and ``cache_dir`` are set (one without the
        other is a configuration error)."""
        return self.vae is not None and self.cache_dir is not None


@dataclass(frozen=True)
class ReuseConfig(ConfigGroup):
    """What later runs reuse: probed metadata, construction snapshots, known-bad files."""

    title: ClassVar[str] = "reuse"
    paths: ClassVar[tuple[str, ...]] = ("metadata_cache", "sample_index", "ledger")

    metadata_cache: PathLike | Auto | None = option(
        AUTO,
        help="JSON-lines file of probed metadata kept across runs (AUTO: <cache_dir>/"
        "metadata.jsonl when the integrity check runs with a cache, else none)",
        parse=str,
    )
    sample_index: PathLike | Auto | None = option(
        AUTO,
        help="folder of construction snapshots (AUTO: <cache_dir>/samples, else "
        "<metadata_cache>.samples, else none)",
        commands=("cache",),
        parse=str,
    )
    ledger: PathLike | Auto | None = option(
        AUTO,
        help="JSON-lines ledger of known-bad files (AUTO: <cache_dir>/ledger.jsonl with a "
        "cache, else none)",
        commands=("cache",),
        parse=str,
    )
    retry_failed: bool = option(
        False, help="try the ledger's known-bad files again", commands=("cache",)
    )


@dataclass(frozen=True)
class ObserveConfig(ConfigGroup):
    """Counters, report parts, alerts and logs while iterating (see docs/observability.md)."""

    title: ClassVar[str] = "observe"
    paths: ClassVar[tuple[str, ...]] = ("log_jsonl", "report_dir")

    metrics: bool = option(True, help="report snapshots, memory, alerts and watchdog", commands=())
    alerts: AlertConfig | None = option(
        default_factory=AlertConfig, help="alert thresholds (None: no alerts)", commands=()
    )
    on_alert: Callable[[Alert], None] | Sequence[Callable[[Alert], None]] | None = option(
        None, help="called with each Alert", commands=()
    )
    metrics_callback: MetricsCallback | None = option(
        None, help="receives report() every metrics_every batches", commands=()
    )
    metrics_every: int = option(50, help="batches between metrics callbacks", commands=())
    log_jsonl: PathLike | None = option(
        None, help="also write the wan_data log as JSON lines here", commands=()
    )
    report_dir: PathLike | None = option(
        None, help="where workers write report parts (default: a private temp folder)", commands=()
    )

    def problems(self) -> list[str]:
        problems = []
        if not _is_int(self.metrics_every) or self.metrics_every < 1:
            problems.append(
                format_error("metrics_every", self.metrics_every, "must be an int >= 1")
            )
        if self.metrics_callback is not None and not callable(self.metrics_callback):
            problems.append(
                format_error("metrics_callback", repr(self.metrics_callback), "must be callable")
            )
        if not all(callable(c) for c in self.alert_callbacks()):
            problems.append(format_error("on_alert", repr(self.on_alert), "must be callable(s)"))
        if self.alerts is not None and not isinstance(self.alerts, AlertConfig):
            problems.append(
                format_error(
                    "alerts", repr(self.alerts), "must be an AlertConfig or None", "see alerts.py"
                )
            )
        return problems

    def alert_callbacks(self) -> list[Any]:
        """``on_alert`` as a list: empty for ``None``, one callable or the sequence given."""
        on_alert = self.on_alert
        if on_alert is None:
            return []
        if callable(on_alert):
            return [on_alert]
        return list(on_alert) if isinstance(on_alert, Sequence) else [on_alert]


@dataclass(frozen=True)
class WorkersConfig(ConfigGroup):
    """Threads, and the rank of this process (``None``: torch.distributed's)."""

    title: ClassVar[str] = "workers"

    num_ffmpeg_threads: int | None = option(
        None,
        help="decoder threads (none: the cores divided among workers)",
        parse=parse_optional_int,
        show=show_optional,
        commands=(),
    )
    probe_threads: int | None = option(
        None,
        help="threads probing metadata (none: the cores)",
        parse=parse_optional_int,
        show=show_optional,
        aliases=("threads",),
    )
    rank: int | None = option(None, help="this rank (default: torch.distributed's)", commands=())
    world_size: int | None = option(None, help="ranks (default: torch.distributed's)", commands=())

    def problems(self) -> list[str]:
        problems = []
        pt = self.probe_threads
        if pt is not None and (not _is_int(pt) or pt < 1):
            problems.append(format_error("probe_threads", pt, "must be an int >= 1 or None"))
        t = self.num_ffmpeg_threads
        if t is not None and (not _is_int(t) or t < 0):
            problems.append(format_error("num_ffmpeg_threads", t, "must be an int >= 0 or None"))
        if self.rank is not None or self.world_size is not None:
            from wan_data.planning.plan import check_plan_options

            problems += [
                p
                for p in check_plan_options(1, "repeat", self.world_size or 1, self.rank or 0)
                if p.startswith(("world_size", "rank"))
            ]
        return problems
