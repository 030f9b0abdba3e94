"""Test agent that fails: reads stdin, prints an error to stderr.

Exits with status 3.
"""

import sys

if sys.stdin is not None:
    sys.stdin.read()
print("fail agent: something went wrong (deliberate test failure)", file=sys.stderr, flush=True)
sys.exit(3)
