"""A read-only folder for tests that run as root.

``chmod -R a-w`` does not bind root, and a read-only bind mount needs privileges tests do not
have, so :func:`read_only_folder` makes every write under one folder fail the way a read-only
mount does: ``OSError(EROFS)`` from the calls that create, write, rename or remove files, and
``os.access(..., W_OK)`` false. Reads are untouched. In-process only (``num_workers=0``).
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def read_only_folder(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Refuse writes under ``folder`` (see the module docstring) until the test ends."""
    root = os.path.abspath(folder)

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return False
        p = os.path.abspath(os.fsdecode(os.fspath(path)))
        return p == root or p.startswith(root + os.sep)

    def refuse(path: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(os.fspath(path)))

    real_open, real_os_open = builtins.open, os.open
    real_access = os.access

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if inside(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if inside(path) and flags & _WRITE_FLAGS:
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if inside(path) and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    def guard(real: Any) -> Any:
        def guarded(*paths: Any, **kwargs: Any) -> Any:
            for p in paths[:2]:
                if isinstance(p, (str, bytes, os.PathLike)) and inside(p):
                    refuse(p)
            return real(*paths, **kwargs)

        return guarded

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "access", fake_access)
    for name in ("mkdir", "unlink", "remove", "rmdir", "replace", "rename", "link", "mkfifo"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))
