"""Saves that a power cut or a full disk cannot tear: write under a temporary name, fsync, rename into place.

A rename is atomic on POSIX file systems, but only what was fsync'ed survives a power cut: without the fsync
the rename can reach the disk before the data, and after a reboot the file has the final name and no content.
So the data is fsync'ed before the rename, and the directory after it (the rename itself is an entry of the
directory). Standard library only: os.fsync, os.replace, os.rename.

    write_text_atomic(path, text)   a file: the old content or the new, never a mix
    publish_dir(tmp_dir, final_dir) a folder written elsewhere (an adapter) put in place whole
    fsync_tree(folder)              make a folder another writer filled (a checkpoint) durable
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

# Siblings publish_dir leaves only when a process dies in it; no reader looks for these names.
PARTIAL = ".partial"
OLD = ".old-"


def fsync_dir(folder: Path) -> None:
    # A directory's own entries (a rename, a new file) are only durable once the directory is fsync'ed.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under `folder`, then every directory, deepest first (each directory's entries)."""
    folder = Path(folder)
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            p = os.path.join(root, name)
            if os.path.islink(p):
                continue
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(root))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace `path` with `text`: a temp file of this writer's own in the same directory (a rename cannot
    cross file systems), written, flushed, fsync'ed, renamed over `path`, then the directory fsync'ed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # a full disk leaves no stray temp file behind
        raise
    fsync_dir(path.parent)


def partial_dir(final_dir: str | Path) -> Path:
    """The temporary sibling of `final_dir` to write into before publish_dir (same file system). One name, the
    same in every process of a multi-GPU run, which all write into it; clean_leftovers clears it first."""
    final_dir = Path(final_dir)
    return final_dir.parent / f".{final_dir.name}{PARTIAL}"


def clean_leftovers(final_dir: str | Path) -> list[Path]:
    """Remove the temporary siblings of `final_dir` that a killed writer left (only while none writes). A
    writer killed between publish_dir's two renames left no `final_dir` and the old one aside: it comes back."""
    final_dir = Path(final_dir)
    aside = sorted(final_dir.parent.glob(f".{final_dir.name}{OLD}*"))
    if not final_dir.exists() and aside:
        os.rename(aside[0], final_dir)
        fsync_dir(final_dir.parent)
    gone = []
    for prefix in (PARTIAL, OLD):
        for p in final_dir.parent.glob(f".{final_dir.name}{prefix}*"):
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


def publish_dir(tmp_dir: str | Path, final_dir: str | Path) -> Path:
    """Put the folder `tmp_dir` (written completely by the caller) in place as `final_dir`.

    Its files are fsync'ed first. A `final_dir` already there is renamed aside, the new one renamed in, the
    parent fsync'ed, and only then the old one deleted: at every moment `final_dir` is the old folder whole,
    the new folder whole, or (between the two renames, a few microseconds) absent, never a mix. The standard
    library has no atomic exchange of two directories (renameat2 RENAME_EXCHANGE), hence the short gap."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    fsync_tree(tmp_dir)
    old = None
    if final_dir.exists():
        old = final_dir.parent / f".{final_dir.name}{OLD}{uuid.uuid4().hex[:8]}"
        os.rename(final_dir, old)
    os.rename(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final_dir
