"""Writing files so that nothing is half-written, written by two processes at once, or lost.

``atomic_path`` (and ``write_text_atomic``, ``write_json_atomic`` on it) has the writer write
beside the target under a name of its own process, then renames: a reader, or a run killed
mid-write, sees the old file or the new one, never half of one, and two processes writing the
same file never mix. ``to_history`` and ``archive_run`` keep what an earlier run made: one file,
or a run's files, moved under ``history/``, never overwritten. ``exclusive`` keeps
one process per folder with a lock file created with ``O_EXCL``, which holds on NFS where
``fcntl`` locks may not. ``write_file_atomic`` does the same for any writer (``torch.save``), and
``BackgroundWriter`` runs such writes on a thread of their own, so a training step never waits
for the disk.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

WRITER_NICENESS = 19  # a background write nothing waits for: the training threads come first


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A path to write ``path``'s new content to; renamed onto ``path`` when the block ends
    without an error (removed when it fails). A symbolic link at ``path`` is replaced, never
    written through."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, value: Any, indent: int = 2) -> Path:
    return write_text_atomic(path, json.dumps(value, indent=indent, default=str))


# --- history: nothing an earlier run made is overwritten -----------------------------------


def to_history(path: Path, name: str | None = None) -> Path | None:
    """Move the file ``path`` to ``history/`` beside it, as ``name`` (default: its stem, its
    modification time and its suffix). A name already taken gets ``-2``, ``-3``, ... Returns
    where it went, or None when there was no file."""
    if not path.exists():
        return None
    history = path.parent / "history"
    history.mkdir(parents=True, exist_ok=True)
    if name is None:
        stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        name = f"{path.stem}.{stamp}{path.suffix}"
    dest, n = history / name, 1
    while dest.exists():
        n += 1
        dest = history / f"{Path(name).stem}-{n}{Path(name).suffix}"
    os.replace(path, dest)
    return dest


def archive_run(items: list[Path], history: Path) -> Path | None:
    """Move an earlier run's ``items`` (those that exist) into ``history/<n>/``, n = 1, 2, ...
    Returns that folder, or None when nothing was there."""
    present = [p for p in items if p.exists()]
    if not present:
        return None
    n = 1 + max((int(p.name) for p in history.glob("*") if p.name.isdigit()), default=0)
    dest = history / str(n)
    dest.mkdir(parents=True)
    for item in present:
        item.replace(dest / item.name)
    return dest


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


# --- digests -------------------------------------------------------------------------------

_CHUNK = 1 << 20


def base_file_digest(path: str | os.PathLike) -> str:
    """``file_digest`` of a base file (a DVAE is ~200 MB), hashed once per process while its
    size and modification time stay the same."""
    stat = os.stat(path)
    return _base_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _base_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)


def file_digest(path: str | os.PathLike, *extra: Any) -> str:
    """sha256 of a file's bytes (and of ``extra`` values), as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    for value in extra:
        digest.update(repr(value).encode())
    return digest.hexdigest()


def write_file_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """``write(partial)`` writes the file's content to a hidden partial file beside ``path``,
    which is then renamed to ``path``: a kill mid-write leaves the previous file intact (the
    partial stays behind, under a name no reader looks for)."""
    with atomic_path(path) as partial:
        write(partial)
    return Path(path)


def _lower_this_threads_priority() -> None:
    """Linux schedules threads one by one: a writer thread at niceness 19 leaves the cores to
    the training threads and writes in their gaps (elsewhere a no-op)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)


class BackgroundWriter:
    """Writes files atomically in the background, one at a time, in the order submitted.

    ``submit(path, content, write, then)`` returns at once. A thread of the job's own (started
    when the previous job's ended) calls ``content()`` (what to write: e.g. a copy of live state
    into host memory), then ``write(value, partial)`` through ``write_file_atomic``, then
    ``then()`` (e.g. removing the files the new one replaces).

    Live state is *held* from ``submit`` until ``content()`` returned, or, with
    ``holds_live=True`` (``content()`` returns the live state itself, uncopied), until the file
    is written. The caller must not change that state while it is held: ``wait_released()``
    blocks until nothing is (a trainer calls it before its optimizer updates the weights). Once
    a copy has let go of the live state, its thread drops to niceness 19 for the write, which
    nothing waits for but the next job; a write that holds live state keeps the caller's
    priority. ``wait()`` blocks until every write is on disk and raises the first write's error;
    ``done()`` lists the paths written since the last call, so the caller can record them on
    its own thread."""

    def __init__(self, name: str = "voicebook-writer"):
        self.name = name
        self._last: threading.Thread | None = None
        self._finished: list[Path] = []
        self._error: BaseException | None = None
        self._held = 0
        self._released = threading.Condition()
        self.cpu_seconds = 0.0  # the jobs' CPU time: what they may take from other threads

    def submit(self, path, content: Callable[[], Any], write, then=None, holds_live=False) -> None:
        self._raise()
        with self._released:
            self._held += 1
        job = (self._last, Path(path), content, write, then, holds_live)
        self._last = threading.Thread(target=self._run, args=job, name=self.name, daemon=True)
        self._last.start()

    def busy(self) -> bool:
        return self._last is not None and self._last.is_alive()

    def wait_released(self) -> None:
        with self._released:
            self._released.wait_for(lambda: self._held == 0)

    def wait(self) -> list[Path]:
        """Every submitted write on disk; the paths written since the last ``done``."""
        if self._last is not None:
            self._last.join()
        self._raise()
        return self.done()

    def done(self) -> list[Path]:
        with self._released:
            finished, self._finished = self._finished, []
        return finished

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"a background write failed: {error}") from error

    def _release(self) -> None:
        with self._released:
            self._held -= 1
            self._released.notify_all()

    def _run(self, previous: threading.Thread | None, *job: Any) -> None:
        if previous is not None:
            previous.join()
        start = time.thread_time()
        try:
            self._write(*job)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by wait/submit
            self._error = self._error or exc
        finally:
            self.cpu_seconds += time.thread_time() - start

    def _write(self, path: Path, content, write, then, holds_live: bool) -> None:
        held = True
        try:
            value = content()
            if not holds_live:  # copied: the live state is free again while the copy is written
                self._release()
                held = False
                _lower_this_threads_priority()
            write_file_atomic(path, lambda partial: write(value, partial))
        finally:
            if held:
                self._release()
        if then is not None:
            then()
        with self._released:
            self._finished.append(path)
