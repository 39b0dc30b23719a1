"""Durable, atomic writes: a file or a directory is written under a temporary name, flushed to the disk
(``fsync`` of every file written and of the directories that name them), then renamed into place.

A reader, or a run resumed after a crash or a power loss, sees the previous version or the new one whole:
the rename is atomic, and the data it publishes reached the disk before it (without the ``fsync``, a file
system may commit the rename before the data, and a power loss leaves a published name over empty or
partial files). This is the one place that does it: checkpoints (``training/checkpointing.py``,
``distributed/checkpoint.py``), saved datasets (``data/disk.py``), model weights and configs
(``core/checkpoint.py``, ``core/config.py``, ``generation/config.py``) and small state files
(``training/state.py``, ``hub/local.py``).
"""
from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

# directory fsync where the platform or file system has none: Windows cannot open a directory, some file
# systems answer EINVAL (the rename is then as durable as they make it)
_NO_DIR_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EISDIR, errno.EPERM}


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s data to the disk; an error (a full or failing disk) is raised, not ignored."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush directory ``path`` (the names in it: a created or renamed entry) where the platform can."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _NO_DIR_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """Flush every regular file under directory ``root``, then every directory, deepest first, ``root`` last
    (symbolic links are not followed)."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                fsync_file(path)
        fsync_dir(directory)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` durably and atomically: a temporary file beside it, flushed, renamed
    over ``path``, and the directory flushed. On any error the temporary file goes and ``path`` is as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    publish_file(tmp, path)


def publish_file(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Publish file ``tmp``, written whole, as ``path``: flushed, renamed over it, the directory flushed. On any
    error ``tmp`` goes and ``path`` is as it was. ``tmp`` must be beside ``path`` (one file system)."""
    tmp, path = Path(tmp), Path(path)
    try:
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def publish_dir(tmp: str | os.PathLike, target: str | os.PathLike, old: str | os.PathLike) -> None:
    """Publish directory ``tmp``, written whole, as ``target``: every file and directory in it flushed, then
    renamed into place and the parent flushed. An existing ``target`` is first renamed to ``old`` (a name the
    caller's clean-up knows) and removed after; if the second rename fails, ``old`` is put back.
    ``tmp`` and ``target`` must be on one file system (in one directory, as every caller has them)."""
    tmp, target, old = Path(tmp), Path(target), Path(old)
    fsync_tree(tmp)
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    fsync_dir(target.parent)
