"""What every frozen model of the cache pass shares: its config files, its process, transformers.

The VAE (diffusers), the UMT5 text encoder and the CLIP image encoder (transformers) are each
found in a folder or a Wan Diffusers repo by reading their ``config.json``, must run in the
calling process (one copy per GPU; CUDA cannot start in a forked DataLoader worker), and the two
encoders need the optional ``transformers``. One copy of each rule, so the three models fail
the same way with messages naming the model and the fix.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch

from wan_data.errors import ConfigError, FatalError, format_error

__all__ = ["EXTRA_HINT", "import_transformers", "read_json_config", "refuse_in_worker"]

EXTRA_HINT = "install the text extra: pip install wan_data[text]"


def read_json_config(path: Path, what: str) -> dict[str, Any] | None:
    """The JSON object in ``path`` (``{}`` when it is not an object), ``None`` when absent.

    Raises:
        ConfigError: the file exists but is not readable JSON (naming ``what`` and the path).
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            format_error(
                what,
                str(path),
                "is not a readable JSON file",
                f"fix or replace it ({type(exc).__name__}: {exc})",
            )
        ) from exc
    return data if isinstance(data, dict) else {}


def refuse_in_worker(model: str, action: str, rule: str, hint: str, stage: str) -> None:
    """Raise :class:`FatalError` when called inside a DataLoader worker process.

    Args:
        model: the model's name in the message ("VAE", "text encoder", ...).
        action: what was attempted ("load", "use").
        rule, hint: the message's rule and fix.
        stage: the stage named in the message.
    """
    worker = torch.utils.data.get_worker_info()
    if worker is not None:
        raise FatalError(
            format_error(
                model,
                f"{action} in DataLoader worker {worker.id} of {worker.num_workers}",
                rule,
                hint,
                stage=stage,
            )
        )


def import_transformers(purpose: str) -> Any:
    """``transformers``, or a ConfigError naming the ``text`` extra when it is not installed."""
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:
        raise ConfigError(
            format_error("transformers", "not installed", f"is needed {purpose}", EXTRA_HINT)
        ) from exc
