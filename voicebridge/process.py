"""Child processes that cannot outlive their parent.

The local stack (``infra``) and the edge supervisor (``media_edge``) both start children that hold
ports or calls; if the parent dies, however it dies (SIGKILL included), an orphan would keep the
port, or calls (and an ECS task) alive with nobody supervising them. Linux's
PR_SET_PDEATHSIG has the kernel signal the child instead.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for subprocess: the child gets ``sig`` when the calling process dies.

    None where the kernel has no such thing (not Linux). The check of the parent's pid closes
    the race of a parent that died between the fork and the prctl.
    """
    if sys.platform != "linux":
        return None
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return arm
