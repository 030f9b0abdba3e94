"""diffs.patch on real git repositories, and diffs.parse on what it made."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from workers_app import diffs

HUGE_LINES = 30_000


def git(path: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=path, check=True, capture_output=True, text=True
    ).stdout.strip()


def build_change(root: Path, *, huge: bool = True) -> tuple[Path, str, str]:
    """A repository with one commit of every kind of change; (path, base, head)."""
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "config", "user.email", "builder@example.com")
    git(repo, "config", "user.name", "Builder")
    (repo / "app.py").write_text("import os\n\n\ndef main():\n    return 1\n")
    (repo / "obsolete.txt").write_text("remove me\n")
    (repo / "notes.md").write_text("".join(f"note {n}\n" for n in range(1, 41)))
    (repo / "tail.txt").write_text("no newline here")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "base")
    base = git(repo, "rev-parse", "HEAD")

    (repo / "app.py").write_text(
        "import os\nimport sys\n\n\ndef main():\n    print('<script>alert(1)</script>')\n"
        "    return 0\n"
    )
    git(repo, "rm", "--quiet", "obsolete.txt")
    git(repo, "mv", "notes.md", "docs.md")
    with (repo / "docs.md").open("a") as fh:
        fh.write("note 41\n")
    (repo / "tail.txt").write_text("still no newline")
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (repo / "new module.py").write_text("VALUE = 42\n")
    if huge:
        (repo / "huge.csv").write_text("".join(f"row,{n}\n" for n in range(HUGE_LINES)))
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "the change")
    return repo, base, git(repo, "rev-parse", "HEAD")


@pytest.fixture
def change(tmp_path: Path) -> tuple[Path, str, str]:
    return build_change(tmp_path)


def by_path(files: list[diffs.FileDiff]) -> dict[str, diffs.FileDiff]:
    return {f.path: f for f in files}


def test_patch_is_the_unified_diff_git_prints(change):
    repo, base, head = change
    text = diffs.patch(repo, base, head)
    assert text.startswith("diff --git ")
    assert "rename from notes.md\nrename to docs.md\n" in text
    assert "Binary files /dev/null and b/logo.png differ\n" in text
    assert "\\ No newline at end of file\n" in text
    assert "-remove me\n" in text
    assert diffs.notes(text) == []


def test_parse_gives_each_file_its_status_counts_and_paths(change):
    files = by_path(diffs.parse(diffs.patch(*change)))
    assert set(files) == {
        "app.py",
        "obsolete.txt",
        "docs.md",
        "tail.txt",
        "logo.png",
        "new module.py",
        "huge.csv",
    }
    app = files["app.py"]
    assert (app.status, app.added, app.removed, app.binary) == ("modified", 3, 1, False)
    gone = files["obsolete.txt"]
    assert (gone.status, gone.old_path, gone.new_path, gone.removed) == (
        "deleted",
        "obsolete.txt",
        "",
        1,
    )
    moved = files["docs.md"]
    assert (moved.status, moved.old_path, moved.new_path) == ("renamed", "notes.md", "docs.md")
    assert (moved.added, moved.removed) == (1, 0)
    assert moved.similarity is not None and moved.similarity > 90
    logo = files["logo.png"]
    assert (logo.status, logo.binary, logo.hunks) == ("added", True, [])
    spaced = files["new module.py"]
    assert (spaced.status, spaced.old_path, spaced.added) == ("added", "", 1)
    huge = files["huge.csv"]
    assert (huge.added, huge.is_large) == (HUGE_LINES, True)
    assert not app.is_large


def test_parse_numbers_old_and_new_lines(change):
    app = by_path(diffs.parse(diffs.patch(*change)))["app.py"]
    rows = [(line.kind, line.old_no, line.new_no, line.text) for line in app.lines]
    assert rows == [
        ("hunk", None, None, "@@ -1,5 +1,7 @@"),
        ("context", 1, 1, "import os"),
        ("add", None, 2, "import sys"),
        ("context", 2, 3, ""),
        ("context", 3, 4, ""),
        ("context", 4, 5, "def main():"),
        ("remove", 5, None, "    return 1"),
        ("add", None, 6, "    print('<script>alert(1)</script>')"),
        ("add", None, 7, "    return 0"),
    ]
    renamed = by_path(diffs.parse(diffs.patch(*change)))["docs.md"]
    assert renamed.hunks[0].header.startswith("@@ -38,3 +38,4 @@")
    assert renamed.lines[-1].kind == "add" and renamed.lines[-1].new_no == 41


def test_a_missing_newline_at_the_end_is_a_note_not_a_line(change):
    tail = by_path(diffs.parse(diffs.patch(*change)))["tail.txt"]
    kinds = [line.kind for line in tail.lines]
    assert kinds == ["hunk", "remove", "note", "add", "note"]
    assert tail.lines[2].text == "No newline at end of file"
    assert (tail.added, tail.removed) == (1, 1)


def test_patch_keeps_whole_files_up_to_the_limit_and_says_what_it_left_out(change):
    repo, base, head = change
    full = diffs.patch(repo, base, head)
    assert len(full.encode()) > 200_000  # the huge file alone
    bounded = diffs.patch(repo, base, head, max_bytes=10_000)
    assert len(bounded.encode()) < 10_000 + 500
    [note] = diffs.notes(bounded)
    assert note.startswith("1 file (")
    assert "left out of this diff (limit 10,000 bytes): huge.csv" in note
    files = by_path(diffs.parse(bounded))
    # Every other file is kept whole: the same text as in the full diff.
    full_files = by_path(diffs.parse(full))
    assert set(files) == set(full_files) - {"huge.csv"}
    for path, file in files.items():
        assert file.text == full_files[path].text


def test_a_limit_smaller_than_every_file_leaves_only_the_note(change):
    repo, base, head = change
    bounded = diffs.patch(repo, base, head, max_bytes=10)
    assert diffs.parse(bounded) == []
    [note] = diffs.notes(bounded)
    assert note.startswith("7 files (")


def test_no_change_is_an_empty_patch(change):
    repo, _, head = change
    assert diffs.patch(repo, head, head) == ""
    assert diffs.patch(repo, "", head) == ""
    assert diffs.parse("") == []


def test_a_missing_commit_is_a_note_not_an_exception(change):
    repo, _, head = change
    text = diffs.patch(repo, "0" * 40, head)
    [note] = diffs.notes(text)
    assert note.startswith("the diff could not be made: ")
    assert diffs.parse(text) == []


def test_a_slow_git_is_stopped_at_the_timeout(change):
    repo, base, head = change
    text = diffs.patch(repo, base, head, timeout=0.000001)
    # Either git was quicker than the timer, or its text was cut short and said so.
    assert text.startswith("diff --git ") or "took over" in text


def test_paths_git_quotes_are_read_back(tmp_path):
    repo = tmp_path / "q"
    repo.mkdir()
    git(repo, "init", "--quiet")
    git(repo, "config", "user.email", "b@example.com")
    git(repo, "config", "user.name", "B")
    (repo / "seed").write_text("x\n")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "seed")
    base = git(repo, "rev-parse", "HEAD")
    (repo / 'say "hi"\tnow.txt').write_text("hello\n")
    (repo / "café.txt").write_text("crème\n")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "quoted")
    files = by_path(diffs.parse(diffs.patch(repo, base, git(repo, "rev-parse", "HEAD"))))
    assert set(files) == {'say "hi"\tnow.txt', "café.txt"}
    assert files["café.txt"].lines[-1].text == "crème"
