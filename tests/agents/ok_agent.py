"""Test agent that succeeds: reads the prompt from stdin and echoes its first line.

Prints "ok agent received: <first line>" and exits 0.
"""

import sys

prompt = sys.stdin.read() if sys.stdin is not None else ""
first_line = prompt.splitlines()[0] if prompt else ""
print(f"ok agent received: {first_line}", flush=True)
sys.exit(0)
