"""One run per expid at a time: an OS file lock on ``<model_root>/<dataset_id>/<model_id>.lock``.

Two runs of one expid share its checkpoint, resume state and log; run side by side, one would
evaluate, record and print the other's weights. :func:`hold_run_lock` takes an exclusive
``flock`` on the lock file for the whole run and writes ``pid host start-time`` into it:

* a second run of the same expid (another shell, another job of a comparison) is refused with
  one :class:`~fuxictr_mmctr.errors.UserError` line naming the first run's PID and host;
* the kernel drops the lock when its process ends however it ends (even ``kill -9``), so a
  killed run never blocks the next one; the file it leaves behind still names it, and the next
  run takes the lock over with one info line;
* a run that ends normally (or with an error) releases the lock and removes the file.

Example::

    with hold_run_lock(params):
        ...  # read, remove and write the expid's checkpoint, resume state and log
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time

from fuxictr_mmctr.errors import UserError

LOCK_SUFFIX = ".lock"


def lock_path(params: dict) -> str:
    """``<model_root>/<dataset_id>/<model_id>.lock`` (beside the expid's checkpoint and log)."""
    folder = os.path.join(params.get("model_root", "./checkpoints/"), params["dataset_id"])
    return os.path.join(folder, params["model_id"] + LOCK_SUFFIX)


@contextlib.contextmanager
def hold_run_lock(params: dict):
    """Hold the expid's run lock for the block (see the module docstring).

    Yields ``None``, or one line to log when a killed run's lock file was taken over (the
    caller logs it once its log is open).
    """
    path = lock_path(params)
    handle, taken_over = acquire(path, params["model_id"])
    try:
        yield taken_over
    finally:
        release(handle, path)


def acquire(path: str, expid: str):
    """Lock ``path`` for this process and write its owner into it.

    Returns ``(open file, takeover line or None)``. A lock held by a live process is a
    :class:`UserError` naming that process's PID and host.
    """
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the checkpoint folder of {path}: "
                        f"{error.strerror}") from None
    while True:
        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError as error:
            raise UserError(f"cannot open the run lock {path}: {error.strerror}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"cannot lock {path}: {error.strerror}") from None
            raise UserError(f"expid {expid} is already running ({describe_owner(path)}); "
                            f"wait for it to finish, or stop it (lock file {path})") from None
        if _same_file(handle, path):
            break
        handle.close()  # the file was removed by the run that released it: lock the new one
    return handle, _take_over(handle, path)


def release(handle, path: str) -> None:
    """Remove the lock file and drop the lock (removal first: no other run can lock the
    removed file's inode after we close it, see :func:`acquire`)."""
    with contextlib.suppress(OSError):
        if _same_file(handle, path):
            os.remove(path)
    handle.close()


def describe_owner(path: str, wait_seconds: float = 2.0) -> str:
    """``PID 1234 on host h, started 2026-12-06 04:30:00`` from the lock file's content (read
    again for up to ``wait_seconds`` while its owner has locked it but not yet written it)."""
    deadline = time.monotonic() + wait_seconds
    owner = _read_owner(path)
    while owner is None and time.monotonic() < deadline:
        time.sleep(0.05)
        owner = _read_owner(path)
    if owner is None:
        return "by another process that is still starting"
    pid, host, started = owner
    return f"PID {pid} on host {host}, started {started}"


def _take_over(handle, path: str):
    """Write this process into the locked file; returns a line about the killed run that left
    it behind, or ``None``."""
    previous = _read_owner(path)
    note = None
    if previous is not None:
        pid, host, started = previous
        reused = host == socket.gethostname() and _alive(pid)
        note = (f"Run lock {path}: taken over from PID {pid} on host {host} (started "
                f"{started}), which ended without releasing it"
                f"{' (that PID now belongs to another process)' if reused else ''}")
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {socket.gethostname()} "
                 f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    handle.flush()
    return note


def _read_owner(path: str):
    """``(pid, host, started)`` written in the lock file, or ``None`` when it holds none."""
    try:
        with open(path, encoding="utf-8") as handle:
            fields = handle.read().split()
    except OSError:
        return None
    if len(fields) < 3 or not fields[0].isdigit():
        return None
    return int(fields[0]), fields[1], fields[2].replace("T", " ")


def _same_file(handle, path: str) -> bool:
    """Whether ``path`` still names the file ``handle`` has open."""
    try:
        on_disk = os.stat(path)
    except OSError:
        return False
    opened = os.fstat(handle.fileno())
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
