"""Signal handlers set for a while, by the main thread only: Python lets no other thread set
one, and a command run from another (a notebook's, a test's) is left as it was."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

Handler = Callable[[int, object], None] | int


@contextlib.contextmanager
def handling(signum: int, handler: Handler) -> Iterator[None]:
    """``handler`` for ``signum`` inside, the one before it after (nothing off the main
    thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, before)


def ctrl_c_ignored() -> contextlib.AbstractContextManager[None]:
    """SIGINT ignored inside, so that the processes started inside begin with it ignored until
    they take it themselves: one stopped by Ctrl-C while still importing its modules prints
    a traceback."""
    return handling(signal.SIGINT, signal.SIG_IGN)
