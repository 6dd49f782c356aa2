"""Process liveness shared by the store (abandoned imports) and the job manager."""

from __future__ import annotations

import os


def pid_exists(pid: int) -> bool:
    """True when a process with this pid exists (signal 0; a pid we may not signal still exists)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
