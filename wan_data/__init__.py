"""wan_data: a crash-proof, native-PyTorch data pipeline for Wan 2.1 / 2.2 video diffusion.

Use ``DataLoader(WanVideoDataset(...), batch_size=None, num_workers=N)``; see README.md.

Subpackages by concern: ``config`` (typed options), ``stages`` (the composable stages),
``sources`` (finding files), ``failures`` (policy, breaker, the one failure mechanism,
ledger), ``media`` (frame math, buckets, decoder access), ``planning`` (construction, the epoch
plan, batches, resume), ``index`` (metadata cache, sample index), ``latents`` (VAE, cache),
``observe`` (metrics, alerts, logs, report), ``tools`` (CLI, scan, plots, demo data);
``wan_data.testing`` holds the stage contract check. See docs/architecture.md.
"""

from __future__ import annotations

import logging

from wan_data.config import AUTO, DatasetConfig
from wan_data.dataset import WanVideoDataset
from wan_data.errors import ConfigError, FatalError, PipelineHealthError, SampleError, WanDataError
from wan_data.failures.ledger import Ledger, LedgerEntry
from wan_data.failures.policy import Action, ErrorPolicy
from wan_data.items import (
    Batch,
    Bucket,
    Clip,
    CropBox,
    Failed,
    Probed,
    Source,
    ValidationResult,
    VideoMetadata,
)
from wan_data.latents.reading import CacheIncompleteError
from wan_data.latents.store import CacheStats, LatentCache
from wan_data.latents.vae import VaeEncoder, VaeInfo
from wan_data.media.buckets import PRESETS, BucketSet, Preset
from wan_data.observe.alerts import Alert, AlertConfig, AlertMonitor
from wan_data.observe.heartbeat import WorkerError
from wan_data.observe.logs import log_to_jsonl
from wan_data.observe.memory import MemoryStats
from wan_data.observe.metrics import scalars
from wan_data.observe.watchdog import StallWatchdog
from wan_data.planning.rank_check import RankMismatchError
from wan_data.sources.concepts import Concept
from wan_data.stages.collate import collate
from wan_data.tools.scan import ScanReport, scan_dataset

__version__ = "0.1.0"

__all__ = [
    "AUTO",
    "PRESETS",
    "Action",
    "Alert",
    "AlertConfig",
    "AlertMonitor",
    "Batch",
    "Bucket",
    "BucketSet",
    "CacheIncompleteError",
    "CacheStats",
    "Clip",
    "Concept",
    "ConfigError",
    "CropBox",
    "DatasetConfig",
    "ErrorPolicy",
    "Failed",
    "FatalError",
    "LatentCache",
    "Ledger",
    "LedgerEntry",
    "MemoryStats",
    "PipelineHealthError",
    "Preset",
    "Probed",
    "RankMismatchError",
    "SampleError",
    "ScanReport",
    "Source",
    "StallWatchdog",
    "VaeEncoder",
    "VaeInfo",
    "ValidationResult",
    "VideoMetadata",
    "WanDataError",
    "WanVideoDataset",
    "WorkerError",
    "__version__",
    "collate",
    "log_to_jsonl",
    "scalars",
    "scan_dataset",
]

logging.getLogger("wan_data").addHandler(logging.NullHandler())
