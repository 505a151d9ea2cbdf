"""Writing files so that nothing is half-written or written by two processes at once.

``write_text_atomic`` (and ``write_json_atomic``) write beside the target under a name of their
own process, then rename: a reader, or a run killed mid-write, sees the old file or the new
one, never half of one, and two processes writing the same file never mix. ``exclusive`` keeps
one process per folder with a lock file created with ``O_EXCL``, which holds on NFS where
``fcntl`` locks may not.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path


def write_json_atomic(path: str | os.PathLike, value: Any, indent: int = 2) -> Path:
    return write_text_atomic(path, json.dumps(value, indent=indent, default=str))


class FolderBusy(RuntimeError):
    """Another live process holds the folder's lock."""


@contextlib.contextmanager
def exclusive(folder: Path, name: str, what: str) -> Iterator[None]:
    """Hold ``folder/name`` while the block runs. A lock whose process died on this host is
    taken over; another host's is named in the error, with how to clear it. ``what`` says who
    holds such a lock, for that message."""
    folder.mkdir(parents=True, exist_ok=True)
    path, host = folder / name, socket.gethostname()
    with contextlib.suppress(FileNotFoundError, ValueError):
        owner, pid = path.read_text().split()
        if owner == host and not Path(f"/proc/{pid}").exists():
            path.unlink()  # its process is gone
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise FolderBusy(
            f"Another {what} ({path.read_text()}) is using {folder}: wait for it, or remove "
            f"{path} if that process is gone."
        ) from None
    os.write(fd, f"{host} {os.getpid()}".encode())
    os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
