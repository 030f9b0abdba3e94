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
from collections.abc import Callable
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
    started = time.monotonic()
    bounded = _BoundedPatch(max_bytes)
    timed_out, code, stderr = _read_within(process, timeout, bounded.add)
    if timed_out:
        logger.warning("git diff %s..%s in %s timed out after %ss", base, head, path, timeout)
        return f"{NOTE_PREFIX}the diff could not be made: git diff took over {timeout:g} seconds\n"
    if code != 0:
        reason = stderr.decode("utf-8", errors="replace").strip().splitlines()
        first = reason[0] if reason else f"git exited with status {code}"
        logger.warning("git diff %s..%s in %s failed: %s", base, head, path, first)
        return f"{NOTE_PREFIX}the diff could not be made: {first}\n"
    logger.debug("git diff %s..%s: %.2fs", base, head, time.monotonic() - started)
    return bounded.text()


def _read_within(
    process: subprocess.Popen[bytes], timeout: float, line_read: Callable[[bytes], None]
) -> tuple[bool, int, bytes]:
    """Each stdout line to `line_read`, killing git past `timeout`: (timed out, code, stderr)."""
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(timeout, _kill)
    timer.start()
    try:
        assert process.stdout is not None  # a pipe, as started
        for line in process.stdout:
            line_read(line)
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
    return timed_out.is_set(), code, stderr


class _BoundedPatch:
    """git's output kept file by file while it fits in `max_bytes`; the files that do not fit
    are only named and counted."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.kept: list[bytes] = []
        self.kept_bytes = 0
        self.omitted: list[str] = []
        self.omitted_bytes = 0
        self._file: list[bytes] = []  # the file being read, while it still fits
        self._file_bytes = 0
        self._fits = True

    def add(self, line: bytes) -> None:
        if line.startswith(b"diff --git "):
            self._close_file()
            self._file, self._file_bytes, self._fits = [line], 0, True
        self._file_bytes += len(line)
        if not self._file:
            return
        if self._fits and self.kept_bytes + self._file_bytes > self.max_bytes:
            # Too big for what is left: only its first line (its name) is kept, and counted.
            self._fits = False
            del self._file[1:]
        if self._fits and line is not self._file[0]:
            self._file.append(line)

    def _close_file(self) -> None:
        if not self._file:
            return
        if self._fits:
            self.kept.extend(self._file)
            self.kept_bytes += self._file_bytes
        else:
            self.omitted.append(_file_name(self._file[0]))
            self.omitted_bytes += self._file_bytes
        self._file = []

    def text(self) -> str:
        """The kept files, and a note line naming what was left out."""
        self._close_file()
        text = b"".join(self.kept).decode("utf-8", errors="replace").replace("\x00", "")
        if not self.omitted:
            return text
        named = ", ".join(self.omitted[:MAX_NAMED_OMISSIONS])
        if len(self.omitted) > MAX_NAMED_OMISSIONS:
            named += f" and {len(self.omitted) - MAX_NAMED_OMISSIONS} more"
        files = f"{len(self.omitted)} file{'s' if len(self.omitted) != 1 else ''}"
        if text and not text.endswith("\n"):
            text += "\n"
        return text + (
            f"{NOTE_PREFIX}{files} ({self.omitted_bytes:,} bytes) left out of this diff "
            f"(limit {self.max_bytes:,} bytes): {named}\n"
        )


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
    reader = _DiffReader()
    for raw in patch_text.splitlines(keepends=True):
        reader.feed(raw)
    return reader.finish()


class _DiffReader:
    """Reads a diff line by line: a file's header lines, then its hunks."""

    def __init__(self) -> None:
        self.files: list[FileDiff] = []
        self.current: FileDiff | None = None
        self.hunk: Hunk | None = None
        self.old_no = self.new_no = 0
        self.chunk: list[str] = []  # the current file's part of the patch

    def feed(self, raw: str) -> None:
        line = raw.rstrip("\n").rstrip("\r") if raw.endswith("\n") else raw
        if line.startswith("diff --git "):
            self._start_file(line)
        current = self.current
        if line.startswith(NOTE_PREFIX) or current is None:
            return
        self.chunk.append(raw)
        if self.hunk is not None and self._hunk_line(current, self.hunk, line):
            return
        match = _HUNK.match(line)
        if match:
            self.old_no, self.new_no = int(match.group(1)), int(match.group(3))
            self.hunk = Hunk(header=line)
            current.hunks.append(self.hunk)
            return
        self.hunk = None
        if not line.startswith("diff --git "):
            _read_header(current, line)

    def finish(self) -> list[FileDiff]:
        if self.current is not None:
            self.current.text = "".join(self.chunk)
        return self.files

    def _start_file(self, line: str) -> None:
        self.finish()
        self.chunk = []
        old, new = _split_git_header(line[len("diff --git ") :])
        self.current = FileDiff(old_path=old, new_path=new)
        self.files.append(self.current)
        self.hunk = None

    def _hunk_line(self, file: FileDiff, hunk: Hunk, line: str) -> bool:
        """Record a line of the hunk; False: the hunk is over, `line` is something else."""
        tag = line[:1]
        if tag == "+":
            hunk.lines.append(Line("add", line[1:], None, self.new_no))
            self.new_no += 1
            file.added += 1
        elif tag == "-":
            hunk.lines.append(Line("remove", line[1:], self.old_no, None))
            self.old_no += 1
            file.removed += 1
        elif tag == " " or line == "":
            hunk.lines.append(Line("context", line[1:], self.old_no, self.new_no))
            self.old_no += 1
            self.new_no += 1
        elif tag == "\\":
            hunk.lines.append(Line("note", line[1:].strip()))
        else:
            return False
        return True


# A file's extended header lines, by how they start: what each says about the file.
def _new_file(file: FileDiff, rest: str) -> None:
    file.status, file.old_path = "added", ""


def _deleted_file(file: FileDiff, rest: str) -> None:
    file.status, file.new_path = "deleted", ""


def _rename_from(file: FileDiff, rest: str) -> None:
    file.status, file.old_path = "renamed", _unquote(rest)


def _copy_from(file: FileDiff, rest: str) -> None:
    file.status, file.old_path = "copied", _unquote(rest)


def _new_name(file: FileDiff, rest: str) -> None:
    file.new_path = _unquote(rest)


def _similarity(file: FileDiff, rest: str) -> None:
    digits = rest.rstrip("%")
    file.similarity = int(digits) if digits.isdigit() else None


# git ends a name with a space in it with a tab on the ---/+++ lines.
def _old_side(file: FileDiff, rest: str) -> None:
    file.old_path = _strip_prefix(rest.removesuffix("\t"), "a/")


def _new_side(file: FileDiff, rest: str) -> None:
    file.new_path = _strip_prefix(rest.removesuffix("\t"), "b/")


def _binary_patch(file: FileDiff, rest: str) -> None:
    file.binary = True


_HEADERS: tuple[tuple[str, Callable[[FileDiff, str], None]], ...] = (
    ("new file mode", _new_file),
    ("deleted file mode", _deleted_file),
    ("rename from ", _rename_from),
    ("rename to ", _new_name),
    ("copy from ", _copy_from),
    ("copy to ", _new_name),
    ("similarity index ", _similarity),
    ("--- ", _old_side),
    ("+++ ", _new_side),
    ("GIT binary patch", _binary_patch),
)


def _read_header(file: FileDiff, line: str) -> None:
    for prefix, read in _HEADERS:
        if line.startswith(prefix):
            read(file, line[len(prefix) :])
            return
    binary = _BINARY.match(line)
    if binary:
        file.binary = True
        file.old_path = _strip_prefix(binary.group(1), "a/")
        file.new_path = _strip_prefix(binary.group(2), "b/")
