"""wan_data: a crash-proof, native-PyTorch data pipeline for Wan 2.1 / 2.2 video diffusion.

Use ``DataLoader(WanVideoDataset(...), batch_size=None, num_workers=N)``; see README.md.
"""

from __future__ import annotations

import logging

from .alerts import Alert, AlertConfig, AlertMonitor, StallWatchdog
from .buckets import PRESETS, BucketSet, Preset
from .collate import collate
from .collect import Concept
from .dataset import WanVideoDataset
from .errors import ConfigError, FatalError, PipelineHealthError, SampleError, WanDataError
from .items import Bucket, Clip, CropBox, Failed, Probed, Source, ValidationResult, VideoMetadata
from .latent_cache import CacheStats, LatentCache
from .ledger import Ledger, LedgerEntry
from .logs import log_to_jsonl
from .memory import MemoryStats
from .metrics import scalars
from .policy import Action, ErrorPolicy
from .prepare import CacheIncompleteError
from .scan import ScanReport, scan_dataset
from .vae import VaeEncoder, VaeInfo

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Action",
    "Alert",
    "AlertConfig",
    "AlertMonitor",
    "Bucket",
    "BucketSet",
    "CacheIncompleteError",
    "CacheStats",
    "Clip",
    "Concept",
    "ConfigError",
    "CropBox",
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
    "__version__",
    "collate",
    "log_to_jsonl",
    "scalars",
    "scan_dataset",
]

logging.getLogger("wan_data").addHandler(logging.NullHandler())
