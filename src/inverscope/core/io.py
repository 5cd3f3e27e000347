"""Safe outputs: destinations checked before work, atomic writes, staging on the
destination's filesystem, and exclusive locks on stores in use.

Every job calls :func:`check_output_path` before it starts working, so a bad ``--out``
(an existing file, a read-only directory, a missing disk) is found in a second, not
after an hour of simulation.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from inverscope.core.errors import InverscopeError


class OutputError(InverscopeError):
    """An output path cannot be written as asked."""


def write_json_atomic(path, data: dict) -> None:
    """Write `data` as JSON to `path` via a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists():
        p = p.parent
    return p


def check_output_path(path, kind: str = "directory", must_be_empty: bool = False) -> Path:
    """Check before any work that `path` can become (or be resumed as) an output `kind`.

    Parameters
    ----------
    path : str or Path
        The output directory or Zarr store.
    kind : str
        Word used in messages ("directory", "Zarr store").
    must_be_empty : bool
        Refuse an existing non-empty directory.

    Raises
    ------
    OutputError
        With one line naming the path and the problem: an existing file, a non-empty
        directory where a new one is needed, a parent that is a file, or a location
        this process cannot write.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise OutputError(f"{path}: exists and is not a directory; choose another --out for the {kind}")
        if must_be_empty and any(path.iterdir()):
            raise OutputError(f"{path}: exists and is not empty; choose a new output {kind}")
        where = path
    else:
        where = _existing_ancestor(path.parent)
        if not where.is_dir():
            raise OutputError(f"{path}: {where} is a file, not a directory; choose another --out")
    try:
        readonly = bool(os.statvfs(where).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        readonly = False
    if readonly:
        raise OutputError(f"{path}: {where} is on a read-only file system; choose another --out")
    if not os.access(where, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: {where} is not writable by this user; choose another --out")
    try:  # access() can pass on a read-only mount: create and remove a probe file
        fd, probe = tempfile.mkstemp(dir=where, prefix=".inverscope-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{path}: cannot write in {where} ({err.strerror or err}); choose another --out") from None
    return where


def free_disk_bytes(path) -> int:
    """Free space [bytes] on the filesystem that holds `path` (or would hold it)."""
    return shutil.disk_usage(_existing_ancestor(Path(path))).free


def _stage_dir(out_dir: Path) -> Path:
    """A staging directory on the same filesystem as `out_dir`, so the final renames cannot fail.

    An existing `out_dir` (possibly a mount point of its own) hosts its staging directory;
    a new one is staged beside it in its parent.
    """
    if out_dir.is_dir():
        stage = Path(tempfile.mkdtemp(dir=out_dir, prefix=".partial-"))
    else:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    os.chmod(stage, 0o755)
    return stage


def _move(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`; falls back to copy-and-delete across filesystems (EXDEV)."""
    try:
        os.replace(src, dst)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        if src.is_dir():
            shutil.copytree(src, dst)
            shutil.rmtree(src)
        else:
            shutil.copy2(src, dst)
            src.unlink()


@contextmanager
def staged_output(out_dir):
    """Yield a staging directory whose contents move into `out_dir` only on success.

    The stage lies on the destination's filesystem (inside `out_dir` when it exists,
    which may be a mount point; beside it otherwise), so the final moves are renames.
    On any error the staging directory is removed and `out_dir` is left as it was.
    """
    out_dir = Path(out_dir)
    stage = _stage_dir(out_dir)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    try:
        if stage.parent != out_dir and not out_dir.exists():
            _move(stage, out_dir)
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in list(stage.iterdir()):
            target = out_dir / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            _move(item, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


class StoreLocked(InverscopeError):
    """Another process is working on the same output."""


@contextmanager
def exclusive_lock(path, what: str = "store"):
    """Hold an exclusive lock on output `path` for the duration of the block.

    The lock is an advisory ``flock`` on a hidden file beside `path`
    (``.NAME.lock``); the kernel releases it when the process exits, also on SIGKILL,
    so a crashed job never leaves a stale lock. A second job on the same path is
    refused at once with :class:`StoreLocked`.
    """
    import fcntl

    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            except OSError:
                pass
            raise StoreLocked(f"{path}: {what} in use by another inverscope process"
                              f"{f' (pid {holder})' if holder else ''}; wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield lock
    finally:
        os.close(fd)  # closing releases the lock; the file stays (removing it would race)
