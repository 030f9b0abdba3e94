"""Test agent that floods stdout with 200 KB of bytes, including NULs and invalid UTF-8.

Writes through sys.stdout.buffer, ends with the line "noisy agent: done", exits 0.
"""

import sys

TOTAL = 200 * 1024
TAIL = b"noisy agent: done\n"

if sys.stdin is not None:
    sys.stdin.buffer.read()
out = bytearray()
line_no = 0
while len(out) < TOTAL - len(TAIL):
    out += b"noisy line %06d \x00 nul \xff\xfe bad \xc3\x28 utf8 " % line_no + b"x" * 40 + b"\n"
    line_no += 1
out = out[: TOTAL - len(TAIL)] + TAIL
sys.stdout.buffer.write(out)
sys.stdout.buffer.flush()
sys.exit(0)
