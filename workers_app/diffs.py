"""A builder's change as a unified diff: made from git when the run ends, read for the page.

The worker stores `patch(...)` on the Run, because the web server may run on another machine
than the worktree; `parse(...)` turns the stored text into files, hunks and numbered lines for
the task page. The stored text is bounded: whole files up to `max_bytes`, then one note line
(starting with `NOTE_PREFIX`, which no line of git's output starts with) naming what was left
out.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_PATCH_BYTES = 1_000_000
GIT_TIMEOUT_SECONDS = 60
NOTE_PREFIX = "[vibe] "
LARGE_FILE_LINES = 400  # a file with more changed lines is summarised on the page, not shown
MAX_NAMED_OMISSIONS = 20

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_BINARY = re.compile(r"^Binary files (.+) and (.+) differ$")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


class DiffError(RuntimeError):
    pass


# --- Making the patch ------------------------------------------------------------------------


def _git_argv(base: str, head: str) -> list[str]:
    return [
        "git",
        # What a person's config could change about the text: prefixes, quoting, colour.
        "-c",
        "core.quotepath=false",
        "-c",
        "diff.noprefix=false",
        "-c",
        "diff.mnemonicPrefix=false",
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "-M",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        f"{base}..{head}",
        "--",
    ]


def _file_name(header: bytes) -> str:
    """The new path of a `diff --git a/X b/Y` line, for the note about left-out files."""
    text = header.decode("utf-8", errors="replace").rstrip("\n")[len("diff --git ") :]
    old, new = _split_git_header(text)
    return new or old or text


def patch(
    path: str | Path,
    base: str,
    head: str,
    *,
    max_bytes: int = MAX_PATCH_BYTES,
    timeout: float = GIT_TIMEOUT_SECONDS,
) -> str:
    """`git diff -M base..head` in the worktree at `path`, bounded to about `max_bytes`.

    Files are kept whole, in git's order, while they fit; a file that does not fit is left out
    (a smaller one after it may still fit) and a last note line says how many files and bytes
    were left out, naming the first few. "" when there is no change; a note line alone when git
    cannot make the diff (a missing commit, a timeout) — the run's record should not fail on it.
    """
    if not base or not head or base == head:
        return ""
    env = {key: value for key, value in os.environ.items() if key != "GIT_EXTERNAL_DIFF"}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_PAGER="cat", LC_ALL="C")
    try:
        process = subprocess.Popen(
            _git_argv(base, head),
            cwd=path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        return f"{NOTE_PREFIX}the diff could not be made: {exc}\n"
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(timeout, _kill)
    timer.start()
    started = time.monotonic()
    kept: list[bytes] = []
    kept_bytes = 0
    omitted: list[str] = []
    omitted_bytes = 0
    current: list[bytes] = []  # the file being read, while it still fits
    current_bytes = 0
    current_fits = True

    def _close_file() -> None:
        nonlocal kept_bytes, omitted_bytes
        if not current:
            return
        if current_fits:
            kept.extend(current)
            kept_bytes += current_bytes
        else:
            omitted.append(_file_name(current[0]))
            omitted_bytes += current_bytes

    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(b"diff --git "):
                _close_file()
                current, current_bytes, current_fits = [line], 0, True
            current_bytes += len(line)
            if not current:
                continue
            if current_fits and kept_bytes + current_bytes > max_bytes:
                # Too big for what is left: only its first line (its name) is kept, and counted.
                current_fits = False
                del current[1:]
            if current_fits and line is not current[0]:
                current.append(line)
        _close_file()
        stderr = process.stderr.read() if process.stderr else b""
        code = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    if timed_out.is_set():
        logger.warning("git diff %s..%s in %s timed out after %ss", base, head, path, timeout)
        return f"{NOTE_PREFIX}the diff could not be made: git diff took over {timeout:g} seconds\n"
    if code != 0:
        reason = stderr.decode("utf-8", errors="replace").strip().splitlines()
        first = reason[0] if reason else f"git exited with status {code}"
        logger.warning("git diff %s..%s in %s failed: %s", base, head, path, first)
        return f"{NOTE_PREFIX}the diff could not be made: {first}\n"
    text = b"".join(kept).decode("utf-8", errors="replace").replace("\x00", "")
    if omitted:
        named = ", ".join(omitted[:MAX_NAMED_OMISSIONS])
        if len(omitted) > MAX_NAMED_OMISSIONS:
            named += f" and {len(omitted) - MAX_NAMED_OMISSIONS} more"
        files = f"{len(omitted)} file{'s' if len(omitted) != 1 else ''}"
        if text and not text.endswith("\n"):
            text += "\n"
        text += (
            f"{NOTE_PREFIX}{files} ({omitted_bytes:,} bytes) left out of this diff "
            f"(limit {max_bytes:,} bytes): {named}\n"
        )
    logger.debug("git diff %s..%s: %.2fs", base, head, time.monotonic() - started)
    return text


# --- Reading it ------------------------------------------------------------------------------


@dataclass
class Line:
    kind: str  # "hunk" (its header), "context", "add", "remove" or "note" (\ No newline …)
    text: str
    old_no: int | None = None
    new_no: int | None = None


@dataclass
class Hunk:
    header: str
    lines: list[Line] = field(default_factory=list)


@dataclass
class FileDiff:
    old_path: str = ""  # "" for a new file
    new_path: str = ""  # "" for a deleted file
    status: str = "modified"  # added, deleted, renamed, copied, modified
    binary: bool = False
    added: int = 0
    removed: int = 0
    similarity: int | None = None
    hunks: list[Hunk] = field(default_factory=list)
    text: str = ""  # this file's part of the patch, as git printed it

    @property
    def path(self) -> str:
        return self.new_path or self.old_path

    @property
    def changed_lines(self) -> int:
        return self.added + self.removed

    @property
    def is_large(self) -> bool:
        return self.changed_lines > LARGE_FILE_LINES

    @property
    def lines(self) -> list[Line]:
        """Every line to show, a hunk's header first."""
        out: list[Line] = []
        for hunk in self.hunks:
            out.append(Line("hunk", hunk.header))
            out.extend(hunk.lines)
        return out


def _unquote(path: str) -> str:
    """A path git printed in C quotes ("a/t\\303\\251st") as the text it stands for."""
    if not (len(path) >= 2 and path[0] == '"' and path[-1] == '"'):
        return path
    out = bytearray()
    body, i = path[1:-1], 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567" and re.match(r"[0-7]{3}", body[i + 1 : i + 4]):
                out.append(int(body[i + 1 : i + 4], 8))
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt).encode()
            i += 2
            continue
        out += char.encode()
        i += 1
    return out.decode("utf-8", errors="replace")


def _strip_prefix(path: str, prefix: str) -> str:
    path = _unquote(path)
    if path == "/dev/null":
        return ""
    return path[len(prefix) :] if path.startswith(prefix) else path


def _split_git_header(text: str) -> tuple[str, str]:
    """`a/X b/Y` (maybe quoted) → (X, Y); for unquoted names with spaces, the halves that match."""
    if text.startswith('"'):
        end = text.find('" ', 1)
        while end != -1 and text[end - 1] == "\\":
            end = text.find('" ', end + 1)
        if end != -1:
            return _strip_prefix(text[: end + 1], "a/"), _strip_prefix(text[end + 2 :], "b/")
    if text.endswith('"'):
        start = text.rfind(' "')
        if start != -1:
            return _strip_prefix(text[:start], "a/"), _strip_prefix(text[start + 1 :], "b/")
    # Same name both sides (the usual case): "a/P b/P" has odd length 2*len(P)+5.
    half = (len(text) - 1) // 2
    if text[half : half + 1] == " " and text[2:half] == text[half + 3 :]:
        return text[2:half], text[half + 3 :]
    old, _, new = text.partition(" b/")
    return _strip_prefix(old, "a/"), new


def notes(patch_text: str) -> list[str]:
    """The note lines the worker added (what was left out, or why there is no diff)."""
    return [
        line[len(NOTE_PREFIX) :] for line in patch_text.splitlines() if line.startswith(NOTE_PREFIX)
    ]


def parse(patch_text: str) -> list[FileDiff]:
    """The files of a unified git diff, with their hunks and numbered lines. Pure."""
    files: list[FileDiff] = []
    current: FileDiff | None = None
    hunk: Hunk | None = None
    old_no = new_no = 0
    chunk: list[str] = []

    def _finish() -> None:
        if current is not None:
            current.text = "".join(chunk)

    for raw in patch_text.splitlines(keepends=True):
        line = raw.rstrip("\n").rstrip("\r") if raw.endswith("\n") else raw
        if line.startswith("diff --git "):
            _finish()
            chunk = []
            old, new = _split_git_header(line[len("diff --git ") :])
            current = FileDiff(old_path=old, new_path=new)
            files.append(current)
            hunk = None
        if line.startswith(NOTE_PREFIX):
            continue
        if current is None:
            continue
        chunk.append(raw)
        if hunk is not None:
            tag = line[:1]
            if tag == "+":
                hunk.lines.append(Line("add", line[1:], None, new_no))
                new_no += 1
                current.added += 1
                continue
            if tag == "-":
                hunk.lines.append(Line("remove", line[1:], old_no, None))
                old_no += 1
                current.removed += 1
                continue
            if tag == " " or line == "":
                hunk.lines.append(Line("context", line[1:], old_no, new_no))
                old_no += 1
                new_no += 1
                continue
            if tag == "\\":
                hunk.lines.append(Line("note", line[1:].strip()))
                continue
        match = _HUNK.match(line)
        if match:
            old_no, new_no = int(match.group(1)), int(match.group(3))
            hunk = Hunk(header=line)
            current.hunks.append(hunk)
            continue
        if line.startswith("diff --git "):
            continue
        hunk = None
        if line.startswith("new file mode"):
            current.status, current.old_path = "added", ""
        elif line.startswith("deleted file mode"):
            current.status, current.new_path = "deleted", ""
        elif line.startswith("rename from "):
            current.status, current.old_path = "renamed", _unquote(line[len("rename from ") :])
        elif line.startswith("rename to "):
            current.new_path = _unquote(line[len("rename to ") :])
        elif line.startswith("copy from "):
            current.status, current.old_path = "copied", _unquote(line[len("copy from ") :])
        elif line.startswith("copy to "):
            current.new_path = _unquote(line[len("copy to ") :])
        elif line.startswith("similarity index "):
            digits = line[len("similarity index ") :].rstrip("%")
            current.similarity = int(digits) if digits.isdigit() else None
        elif line.startswith("--- "):
            # git ends a name with a space in it with a tab here.
            current.old_path = _strip_prefix(line[4:].removesuffix("\t"), "a/")
        elif line.startswith("+++ "):
            current.new_path = _strip_prefix(line[4:].removesuffix("\t"), "b/")
        elif line.startswith("GIT binary patch") or _BINARY.match(line):
            current.binary = True
            binary = _BINARY.match(line)
            if binary:
                current.old_path = _strip_prefix(binary.group(1), "a/")
                current.new_path = _strip_prefix(binary.group(2), "b/")
    _finish()
    return files
