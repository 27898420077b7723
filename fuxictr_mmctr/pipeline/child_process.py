"""Child processes that do not outlive the process that started them."""
from __future__ import annotations

import os
import sys

#: ``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int):
    """A ``preexec_fn`` for :class:`subprocess.Popen` that makes the child die with
    ``parent_pid``, even when that one is killed with SIGKILL (Linux ``PR_SET_PDEATHSIG``);
    elsewhere ``None`` (the parent's own clean-up then stops its children when it can).

    Example::

        subprocess.Popen(command, preexec_fn=die_with_parent(os.getpid()))
    """
    if not sys.platform.startswith("linux"):
        return None

    def arrange() -> None:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before the line above
            os._exit(1)

    return arrange


__all__ = ["PR_SET_PDEATHSIG", "die_with_parent"]
