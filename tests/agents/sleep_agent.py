"""Test agent that runs long: sleeps TEST_SLEEP seconds (default 30), printing every 0.2 s.

Exits 0 when done, or 143 on SIGTERM (for time-limit and drain tests).
"""

import os
import signal
import sys
import time


def on_sigterm(signum: int, frame: object) -> None:
    print("sleep agent: got SIGTERM, exiting 143", flush=True)
    sys.exit(143)


signal.signal(signal.SIGTERM, on_sigterm)
if sys.stdin is not None and not sys.stdin.isatty():
    sys.stdin.read()
deadline = time.monotonic() + float(os.environ.get("TEST_SLEEP", "30"))
tick = 0
while (remaining := deadline - time.monotonic()) > 0:
    print(f"sleep agent: tick {tick}", flush=True)
    tick += 1
    time.sleep(min(0.2, remaining))
print("sleep agent: done", flush=True)
sys.exit(0)
