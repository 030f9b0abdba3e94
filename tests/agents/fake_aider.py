"""A stand-in for the `aider` program: Aider's banner, then a `Tokens: … Cost: …` line every
0.2 s, forever, each call of 100k tokens sent and 10k received (as Aider prints them).

For budget tests: the worker prices these tokens live (the model named on the banner) and must
stop it. Ignores its arguments; `TEST_AIDER_MODEL` names the model (default gpt-4.1).
"""

import os
import time

model = os.environ.get("TEST_AIDER_MODEL", "gpt-4.1")
print("Aider v0.86.2", flush=True)
print(f"Model: {model} with diff edit format", flush=True)
print("Git repo: .git with 1 files", flush=True)
session = 0.0
while True:
    session += 0.28
    print("Working on it.", flush=True)
    print(
        f"Tokens: 100k sent, 10k received. Cost: $0.28 message, ${session:.2f} session.",
        flush=True,
    )
    time.sleep(0.2)
