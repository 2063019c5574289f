"""`lenet5.signals`: handlers set for a while, by the main thread only."""

from __future__ import annotations

import signal
import threading

from lenet5.signals import ctrl_c_ignored, handling


def test_a_handler_is_set_inside_and_the_one_before_after():
    def mine(signum, frame):
        raise AssertionError

    before = signal.getsignal(signal.SIGTERM)
    with handling(signal.SIGTERM, mine):
        assert signal.getsignal(signal.SIGTERM) is mine
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_is_ignored_inside_on_the_main_thread_only():
    """Processes started inside begin with SIGINT ignored (they inherit it); another thread
    cannot set signals, and is left alone."""
    before = signal.getsignal(signal.SIGINT)
    with ctrl_c_ignored():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is before
    seen = []

    def elsewhere():
        with ctrl_c_ignored():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert seen == [before]
