"""Atomic file writes, write errors users can act on, and folders to fall back to.

Atomic writes
    :func:`atomic_path` writes to a temporary name beside the target (``.tmp-XXXXXXXX<name>``)
    and renames it onto the target when the write is complete, so a reader never sees a
    half-written file and a failed write leaves the previous file intact.

Write errors
    A full disk, a quota, a file-size limit, a read-only mount, a permission or a file in the
    way of a folder (``ENOSPC``, ``EDQUOT``, ``EFBIG``, ``EROFS``, ``EACCES``, ...) while
    writing or renaming is a one-line :class:`~fuxictr_mmctr.errors.UserError` naming the
    target file and the reason, e.g. ``cannot write out/s.csv: no space left on device``.

Temporaries left by a killed write
    A process killed between the write and the rename leaves its ``.tmp-*`` file behind. Every
    atomic write removes, from the folder it writes into, the ``.tmp-*`` files not modified for
    :data:`STALE_AFTER_SECONDS` (10 minutes): a live writer touches its temporary file far more
    often than that (the slowest, a synthetic split or an array cache, appends a block every
    few seconds), so only leftovers of dead writers are removed, never a concurrent writer's
    file. The array cache (:mod:`fuxictr_mmctr.data.arrays`) applies the same rule to its
    temporary folders.

Fallback folders
    :func:`unwritable_reason` tells whether a folder can be written (or created); callers whose
    data folder is read-only (a shared mount) put derived files under :func:`user_cache_dir`.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import tempfile
import time

from fuxictr_mmctr.errors import UserError

#: Prefix of every temporary file or folder written here.
TEMPORARY_PREFIX = ".tmp-"
#: A temporary untouched for this long is a leftover of a killed write.
STALE_AFTER_SECONDS = 600
#: Reasons, in words, for the errors that are about where a file goes rather than what is in it.
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file-size limit reached)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a file is in the way of its folder",
    errno.EEXIST: "a file is in the way of its folder",
    errno.ENAMETOOLONG: "file name too long",
}


def write_error(path, error: OSError) -> UserError:
    """The one-line :class:`UserError` for ``error`` while writing ``path``."""
    reason = WRITE_ERRORS.get(error.errno) or os.strerror(error.errno or 0).lower()
    return UserError(f"cannot write {path}: {reason}")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched, so a
    reader never sees a half-written file. Write errors (see the module docstring) become a
    :class:`UserError` naming ``path``; stale temporaries in the folder are removed first.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"cannot write {path}: it is a folder, not a file")
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temporaries(folder)
        handle, tmp_path = tempfile.mkstemp(prefix=TEMPORARY_PREFIX,
                                            suffix=os.path.basename(path), dir=folder)
        os.close(handle)
    except OSError as error:
        raise write_error(path, error) from None
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as error:
        _remove_quietly(tmp_path)
        if _is_about_the_write(error, path, tmp_path):
            raise write_error(path, error) from None
        if error.errno == errno.ENOENT and error.filename == tmp_path:
            raise UserError(f"cannot write {path}: its temporary file {tmp_path} was removed "
                            f"while it was being written") from None
        raise
    except BaseException:
        _remove_quietly(tmp_path)
        raise


def _is_about_the_write(error: OSError, path: str, tmp_path: str) -> bool:
    """Whether ``error`` is a write error on this target (not, say, a file the body read)."""
    return error.errno in WRITE_ERRORS and error.filename in (None, path, tmp_path)


def _remove_quietly(tmp_path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(tmp_path)


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp_path:
        with open(tmp_path, "w", encoding="utf-8") as handle:
            handle.write(text)


def remove_stale_temporaries(folder, max_age: float = STALE_AFTER_SECONDS,
                             folders: bool = False) -> list[str]:
    """Remove ``.tmp-*`` files in ``folder`` untouched for ``max_age`` seconds; return them.

    ``folders=True`` removes stale ``.tmp-*`` folders too (age: their newest file). Symbolic
    links are never followed nor removed, and anything that cannot be removed is left alone:
    cleaning up is a courtesy, never a reason for a write to fail.
    """
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMPORARY_PREFIX):
            continue
        try:
            if entry.is_symlink():
                continue
            is_folder = entry.is_dir(follow_symlinks=False)
            if is_folder and not folders:
                continue
            if now - _last_change(entry.path, is_folder) < max_age:
                continue
            if is_folder:
                shutil.rmtree(entry.path)
            else:
                os.remove(entry.path)
            removed.append(entry.path)
        except OSError:  # gone already (its writer finished), or not ours to remove
            continue
    if removed:
        logging.info("Removed %d temporary file(s) left by an interrupted write in %s",
                     len(removed), folder)
    return removed


def _last_change(path: str, is_folder: bool) -> float:
    """Latest mtime of a file, or of a folder and the files directly in it."""
    latest = os.stat(path).st_mtime
    if is_folder:
        for entry in os.scandir(path):
            latest = max(latest, entry.stat(follow_symlinks=False).st_mtime)
    return latest


def unwritable_reason(folder) -> str | None:
    """``None`` when files can be written in ``folder`` (creating it if needed), else why not.

    The folder, or the nearest part of its path that exists, must be a folder this process may
    write into; a read-only mount counts as not writable even for root.
    """
    folder = os.path.abspath(os.fspath(folder))
    existing = folder
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        if _read_only_mount(existing):
            return f"{existing} is on a read-only mount"
        return f"{existing} is not writable"
    return None


def _read_only_mount(folder: str) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): just "not writable"
        return False


def user_cache_dir(*parts: str) -> str:
    """``$XDG_CACHE_HOME/fuxictr_mmctr/<parts>`` (``~/.cache`` when the variable is unset)."""
    root = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(root):  # the XDG spec says to ignore a relative value
        root = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "fuxictr_mmctr", *parts)


def folder_key(folder, name: str | None = None) -> str:
    """A short name unique to ``folder``'s absolute path, ``<name>-<hash of the path>``, for
    cache keys; ``name`` (default: the folder's own name) only helps a person find it."""
    folder = os.path.abspath(os.fspath(folder))
    digest = hashlib.sha1(folder.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    name = os.path.basename(folder) if name is None else name
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".")
    return f"{name or 'root'}-{digest}"
