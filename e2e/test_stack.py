"""The harness itself: a start-up failure is reported at once, with its cause, and leaks nothing."""

import os
import socket
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from stack import ROOT, WEBHOOK_PORT, Stack  # noqa: E402

BIN = os.path.join(ROOT, "target", "debug")
WORK = os.path.join(ROOT, "e2e", ".work", "pytest-stack")


def test_a_service_that_exits_while_starting_fails_at_once_with_its_log_and_leaks_nothing():
    spawned = []

    class Recorded(Stack):
        def _spawn(self, name, args, env=None, cwd=None):
            p = super()._spawn(name, args, env, cwd)
            spawned.append(p)
            return p

    # The webhook's port is taken, so it exits right after moto and tokenvend-sts started.
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", WEBHOOK_PORT))
        taken.listen()
        start = time.time()
        with pytest.raises(RuntimeError) as failed:
            Recorded(WORK, BIN, log=lambda m: None)
        elapsed = time.time() - start
    message = str(failed.value)
    assert "tokenvend-webhook did not become ready: webhook exited with code 1" in message, message
    assert "Address already in use" in message, message
    # Not the 30 s readiness timeout: moto and tokenvend-sts start in a few seconds.
    assert elapsed < 25, elapsed
    assert [p.args[0].rsplit("/", 1)[-1] for p in spawned] == ["moto_server", "tokenvend-sts", "tokenvend-webhook"]
    assert all(p.poll() is not None for p in spawned), "a process outlived the failed start-up"
