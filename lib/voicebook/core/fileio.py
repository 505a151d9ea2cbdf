"""Writing files so that nothing is half-written, written by two processes at once, or lost.

``atomic_path`` (and ``write_text_atomic``, ``write_json_atomic`` on it) has the writer write
beside the target under a name of its own process, then renames: a reader, or a run killed
mid-write, sees the old file or the new one, never half of one, and two processes writing the
same file never mix. ``to_history`` and ``archive_run`` keep what an earlier run made: one file,
or a run's files, moved under ``history/``, never overwritten. ``exclusive`` keeps
one process per folder with a lock file created with ``O_EXCL``, which holds on NFS where
``fcntl`` locks may not. ``write_file_atomic`` does the same for any writer (``torch.save``), and
``BackgroundWriter`` runs such writes on a thread of their own, so a training step never waits
for the disk, and ``DirectFile`` writes a large file past the page cache, so that the kernel's
copying and writeback do not slow the threads that train.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import mmap
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import filelock

WRITER_NICENESS = 19  # a background write nothing waits for: the training threads come first
DIRECT_BLOCK = 4096  # O_DIRECT writes whole blocks from block-aligned memory
DIRECT_STAGE_BYTES = 16 << 20  # per direct write: large enough for the disk's full speed


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
    """Hold ``folder/name`` while the block runs (``filelock``: an OS lock, so of two processes
    that ask at once exactly one gets it, and a lock whose process died is free again). The file
    names its holder (host and process) for the error another ``what`` gets meanwhile."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    lock = filelock.FileLock(path, timeout=0, on_acquired=_name_the_holder)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = path.read_text(errors="replace").strip() or "starting"
        raise FolderBusy(
            f"Another {what} ({holder}) is using {folder}: wait for it to finish."
        ) from None
    try:
        yield
    finally:
        lock.release()


def _name_the_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())


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


class DirectFile:
    """A file opened for writing that bypasses the page cache (``O_DIRECT``), for large files
    nothing reads soon (a best model): the bytes go from a page-aligned staging buffer straight
    to the disk. A buffered write of a full-size model costs the concurrent training steps the
    kernel's page-cache copy and its writeback threads, which run at the training threads'
    priority; written directly, its cost is one copy into the staging
    buffer, made on the writer's thread. Where the file system refuses direct writes (tmpfs,
    some network file systems, a platform without ``O_DIRECT``) it writes through the page
    cache instead. ``write`` and ``flush`` are what ``torch.save`` needs of a file object."""

    def __init__(self, path: str | os.PathLike, stage_bytes: int = DIRECT_STAGE_BYTES):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self.direct = hasattr(os, "O_DIRECT")
        try:
            self._fd = os.open(path, flags | getattr(os, "O_DIRECT", 0), 0o644)
        except OSError:  # EINVAL: this file system has no direct I/O
            self._fd, self.direct = os.open(path, flags, 0o644), False
        self._stage = mmap.mmap(-1, stage_bytes)  # anonymous: page-aligned, as O_DIRECT needs
        self._filled = 0
        self._written = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        while view:
            take = min(len(self._stage) - self._filled, len(view))
            self._stage[self._filled : self._filled + take] = view[:take]
            self._filled, view = self._filled + take, view[take:]
            if self._filled == len(self._stage):
                self._write_stage(self._filled)
        return size

    def flush(self) -> None:
        """Nothing to do: the staging buffer goes to the disk when full, and at ``close``."""

    def close(self) -> None:
        """The tail written (padded to a whole block, then cut back to the file's size)."""
        if self._fd < 0:
            return
        try:
            size = self._written + self._filled
            if self._filled:
                self._write_stage(-(-self._filled // DIRECT_BLOCK) * DIRECT_BLOCK)
            os.ftruncate(self._fd, size)
        finally:
            os.close(self._fd)
            self._fd = -1
            self._stage.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _write_stage(self, length: int) -> None:
        chunk = memoryview(self._stage)[:length]
        try:
            written = os.write(self._fd, chunk)
        except OSError as exc:
            if not self.direct or exc.errno != errno.EINVAL:
                raise
            self._buffered()  # the file system opened it direct but refuses such writes
            written = os.write(self._fd, chunk)
        finally:
            chunk.release()
        if written != length:
            raise OSError(errno.ENOSPC, f"short write ({written} of {length} bytes)")
        self._written += self._filled
        self._filled = 0

    def _buffered(self) -> None:
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False


HOLDS = ("until_copied", "until_written", "nothing")  # how long a job holds live state


@dataclass(eq=False)
class WriteJob:
    """One file for a ``BackgroundWriter`` to write (see ``submit``); ``key``: what a newer job
    under the same key replaces while this one waits its turn."""

    path: Path
    content: Callable[[], Any]
    write: Callable[[Any, Path], object]
    then: Callable[[], None] | None = None
    holds: str = "until_copied"
    key: str | None = None

    def __post_init__(self) -> None:
        if self.holds not in HOLDS:
            raise ValueError(f"holds={self.holds!r}: use one of {', '.join(HOLDS)}")

    @property
    def held(self) -> bool:
        """Whether the job counts as holding live state until it lets go of it."""
        return self.holds != "nothing"


class BackgroundWriter:
    """Writes files atomically in the background, one at a time, in the order submitted.

    ``submit(path, content, write, then)`` returns at once. When the previous job has ended,
    ``content()`` is called (what to write: e.g. a copy of live state into host memory), then
    ``write(value, partial)`` through ``write_file_atomic``, then ``then()`` (e.g. removing the
    files the new one replaces). ``withdraw(key)`` takes back a job that has not started yet,
    so a newer one can take its place (a best model that a better one replaced before its turn
    need not reach the disk).

    Live state is *held* from ``submit`` until ``content()`` returned (``holds="until_copied"``:
    ``content()`` copies it), until the file is written (``"until_written"``: ``content()``
    returns the live state itself, uncopied), or not at all (``"nothing"``: the caller copied it
    before submitting). The caller must not change that state while it is held:
    ``wait_released()`` blocks until nothing is (a trainer calls it before its optimizer updates
    the weights). A write that holds nothing runs at niceness 19 (nothing waits for it but the
    next job); one that holds live state keeps the caller's priority. ``wait()`` blocks until
    every write is on disk and raises the first write's error; ``done()`` lists the paths
    written since the last call, so the caller can record them on its own thread.

    The queue is ``concurrent.futures``: one single-thread executor at the caller's priority
    (``content()``, and a write that holds live state) and one at niceness 19 (the other
    writes: a thread's niceness cannot be raised again for the next job); each job starts when
    the one before it has ended, whichever executor ran it. Hand-made on top: the holds and
    ``withdraw`` (a future cannot be cancelled once its thread waits for the job before it)."""

    def __init__(self, name: str = "voicebook-writer"):
        self.name = name
        self._pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None
        self._jobs: list[Future] = []  # each job's last step, in order: its end and its error
        self._waiting: list[WriteJob] = []  # submitted, not started: what withdraw may take
        self._finished: list[Path] = []
        self._held = 0
        self._released = threading.Condition()
        self.cpu_seconds = 0.0  # the jobs' CPU time: what they may take from other threads

    def submit(
        self,
        path,
        content: Callable[[], Any],
        write,
        then=None,
        holds: str = "until_copied",
        key: str | None = None,
    ) -> None:
        self._raise()
        job = WriteJob(Path(path), content, write, then, holds, key)
        with self._released:
            self._held += job.held
            self._waiting.append(job)
        at_callers, at_nice = self._pools or self._start()
        previous = self._jobs[-1] if self._jobs else None
        if holds == "until_written":  # the write reads live state: at the caller's priority
            self._jobs.append(at_callers.submit(self._timed, self._whole, job, previous))
        else:
            copied = at_callers.submit(self._timed, self._copy, job, previous)
            self._jobs.append(at_nice.submit(self._timed, self._write_copy, job, copied))

    def _start(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        self._pools = (
            ThreadPoolExecutor(1, thread_name_prefix=self.name),
            ThreadPoolExecutor(1, f"{self.name}-nice", initializer=_lower_this_threads_priority),
        )
        return self._pools

    def withdraw(self, key: str) -> WriteJob | None:
        """The waiting job under ``key``, taken back before it started (it ends without
        writing); None when there is none."""
        with self._released:
            job = next((j for j in self._waiting if j.key == key), None)
            if job is not None:
                self._waiting.remove(job)
                self._held -= job.held
                self._released.notify_all()
        return job

    def withdrawable(self, key: str) -> bool:
        """Whether a job under ``key`` waits its turn (``withdraw`` would take it back)."""
        with self._released:
            return any(j.key == key for j in self._waiting)

    def busy(self) -> bool:
        return any(not f.done() for f in self._jobs)

    def wait_released(self) -> None:
        with self._released:
            self._released.wait_for(lambda: self._held == 0)

    def wait(self) -> list[Path]:
        """Every submitted write on disk; the paths written since the last ``done``."""
        futures.wait(self._jobs)
        self._raise()
        return self.done()

    def done(self) -> list[Path]:
        with self._released:
            finished, self._finished = self._finished, []
        return finished

    def _raise(self) -> None:
        """The first ended job's error, once; ended jobs are forgotten (the next job waits for
        the last one that has not ended)."""
        ended = [f for f in self._jobs if f.done()]
        error = next((e for f in ended if (e := f.exception()) is not None), None)
        self._jobs = [f for f in self._jobs if f not in ended]
        if error is not None:
            raise RuntimeError(f"a background write failed: {error}") from error

    def _release(self) -> None:
        with self._released:
            self._held -= 1
            self._released.notify_all()

    def _timed(self, step: Callable[..., Any], *args: Any) -> Any:
        start = time.thread_time()
        try:
            return step(*args)
        finally:
            self.cpu_seconds += time.thread_time() - start

    def _started(self, job: WriteJob, previous: Future | None) -> bool:
        """Wait for the job before (its error is its own); False when this one was withdrawn."""
        if previous is not None:
            futures.wait([previous])
        with self._released:
            if job not in self._waiting:
                return False
            self._waiting.remove(job)
        return True

    def _whole(self, job: WriteJob, previous: Future | None) -> None:
        if not self._started(job, previous):
            return
        try:
            value = job.content()
            write_file_atomic(job.path, lambda partial: job.write(value, partial))
        finally:
            self._release()
        self._then(job)

    def _copy(self, job: WriteJob, previous: Future | None) -> tuple[Any] | None:
        """``(content,)``, the live state free again; None when the job was withdrawn."""
        if not self._started(job, previous):
            return None
        try:
            return (job.content(),)
        finally:
            if job.held:
                self._release()

    def _write_copy(self, job: WriteJob, copied: Future) -> None:
        value = copied.result()  # the copy's error is this job's
        if value is not None:
            write_file_atomic(job.path, lambda partial: job.write(value[0], partial))
            self._then(job)

    def _then(self, job: WriteJob) -> None:
        if job.then is not None:
            job.then()
        with self._released:
            self._finished.append(job.path)
