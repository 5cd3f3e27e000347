"""Run the `inverscope` CLI and SIGKILL it at one chosen store write (used by test_campaign_faults.py).

Deterministic fault injection: the process kills itself (SIGKILL, nothing is cleaned up)
just before the KILL_AT-th write (1-based) of key KILL_KEY (``done/c/0``, ``zarr.json``, ...)
into the Zarr store at KILL_STORE (or the hidden folder it is created in); with KILL_CONTAINS set, only writes whose bytes contain
that text are counted. Arguments are the CLI's: ``python kill_at_write.py campaign CFG --out STORE``.
"""

import os
import signal
import sys
import threading
from pathlib import Path

import zarr.storage._local as local

STORE = Path(os.environ["KILL_STORE"]).absolute()
KEY, AT = os.environ["KILL_KEY"], int(os.environ["KILL_AT"])
CONTAINS = os.environ.get("KILL_CONTAINS", "").encode()
_real_put = local._put  # every LocalStore write (sync and async) ends here
_lock = threading.Lock()
_seen = 0


def _put(path, value, exclusive=False):
    global _seen
    try:  # keys of the store, or of the hidden folder it is created in (.NAME.creating-PID)
        parts = Path(path).absolute().relative_to(STORE.parent).parts
        ours = parts[0] == STORE.name or parts[0].startswith(f".{STORE.name}.creating-")
        key = Path(*parts[1:]).as_posix() if ours and len(parts) > 1 else None
    except ValueError:
        key = None
    if key == KEY and CONTAINS in bytes(value.as_buffer_like()):
        with _lock:
            _seen += 1
            if _seen == AT:
                os.kill(os.getpid(), signal.SIGKILL)
    return _real_put(path, value, exclusive=exclusive)


local._put = _put

if __name__ == "__main__":
    from inverscope.cli import main

    sys.exit(main(sys.argv[1:]))
