"""The change a builder run left, on the task page and from `vibe diff` / `vibe task --json`,
from patches diffs.patch made on a real repository."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tasks_app import lifecycle
from tasks_app.models import Run, Task
from tests.workers_app.test_diffs import build_change, git
from workers_app import diffs

pytestmark = pytest.mark.django_db


def task_with_change(root: Path, *, huge: bool = True) -> tuple[Task, Run, Path]:
    """A builder task whose run left the change build_change makes, recorded as the worker does."""
    repo, base, head = build_change(root, huge=huge)
    task = lifecycle.submit("Print a greeting", lane="backend", actor="cli")
    files = [
        {
            "path": path,
            "added": None if a == "-" else int(a),
            "removed": None if r == "-" else int(r),
        }
        for a, r, path in (
            line.split("\t")
            for line in git(
                repo, "diff", "--numstat", "--no-renames", f"{base}..{head}"
            ).splitlines()
        )
    ]
    Task.objects.filter(pk=task.pk).update(
        branch=f"vibe/task-{task.pk}",
        head_commit=head,
        result={"base_commit": base, "changed_files": files},
    )
    run = Run.objects.create(
        task=task,
        attempt=1,
        agent="claude",
        kind="claude",
        role="builder",
        base_commit=base,
        head_commit=head,
        changed_files=files,
        patch=diffs.patch(repo, base, head),
        exit_code=0,
    )
    task.refresh_from_db()
    return task, run, repo


def page(client, viewer, task: Task) -> str:
    client.force_login(viewer)
    response = client.get(task.get_absolute_url())
    assert response.status_code == 200
    return response.content.decode()


def test_the_task_page_lists_the_changed_files_with_counts(client, viewer, tmp_path):
    task, run, _ = task_with_change(tmp_path)
    html = page(client, viewer, task)
    table = html[
        html.index('class="diff-files"') : html.index("</table>", html.index('class="diff-files"'))
    ]
    for name in ("app.py", "obsolete.txt", "docs.md", "logo.png", "new module.py", "huge.csv"):
        assert f"<code>{name}</code>" in table
    assert "renamed from <code>notes.md</code>" in table
    assert re.search(r'diff-plus">\+3</td><td class="num diff-minus">−1</td>', table)
    assert ">binary</td>" in table
    assert "7 files changed" in html


def test_each_file_shows_numbered_lines_with_markers_and_escaped_text(client, viewer, tmp_path):
    task, run, _ = task_with_change(tmp_path, huge=False)
    html = page(client, viewer, task)
    assert "<script>alert(1)</script>" not in html
    assert "print(&#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;)" in html
    added = re.search(
        r'<tr class="diff-add"><td class="ln"></td><td class="ln">2</td><td class="mk">'
        r'<span aria-hidden="true">\+</span><span class="visually-hidden">added</span></td>'
        r'<td class="code">import sys</td>',
        html,
    )
    assert added
    assert re.search(
        r'<tr class="diff-remove"><td class="ln">5</td><td class="ln"></td><td class="mk">'
        r'<span aria-hidden="true">−</span><span class="visually-hidden">removed</span></td>'
        r'<td class="code">    return 1</td>',
        html,
    )
    assert '<tr class="diff-context"><td class="ln">4</td><td class="ln">5</td>' in html
    assert "<code>@@ -1,5 +1,7 @@</code>" in html
    assert "No newline at end of file" in html
    # A small diff opens every file.
    assert html.count('class="diff-file"') == 6
    assert re.search(r'<details class="diff-file" id="diff-\d+-1" open>', html)


def test_binary_and_large_files_are_summarised_not_shown(client, viewer, tmp_path):
    task, run, _ = task_with_change(tmp_path)
    html = page(client, viewer, task)
    assert "Binary file added: not shown." in html
    assert "Large file: 30,000 lines changed — not shown." in html
    assert f"<code>vibe/task-{task.pk}</code> at commit <code>{run.head_commit[:12]}</code>" in html
    assert "row,29999" not in html
    # A large diff starts with every file closed.
    assert not re.search(r'<details class="diff-file" id="diff-\d+-\d+" open>', html)


def test_what_the_patch_left_out_is_said_on_the_page(client, viewer, tmp_path):
    task, run, repo = task_with_change(tmp_path)
    Run.objects.filter(pk=run.pk).update(
        patch=diffs.patch(repo, run.base_commit, run.head_commit, max_bytes=5_000)
    )
    html = page(client, viewer, task)
    assert "1 file (" in html and "left out of this diff (limit 5,000 bytes): huge.csv" in html
    assert f"the rest is on branch <code>vibe/task-{task.pk}</code>" in html


def test_a_rework_round_shows_its_own_diff_and_what_it_changed(client, viewer, tmp_path):
    task, first, repo = task_with_change(tmp_path, huge=False)
    (repo / "app.py").write_text("import os\n\n\ndef main():\n    return 2\n")
    git(repo, "commit", "--quiet", "-am", "rework")
    head = git(repo, "rev-parse", "HEAD")
    second = Run.objects.create(
        task=task,
        attempt=2,
        role="builder",
        base_commit=first.base_commit,
        head_commit=head,
        patch=diffs.patch(repo, first.base_commit, head),
        exit_code=0,
    )
    html = page(client, viewer, task)
    summary = html[html.index(f'id="work-diff-{second.pk}"') :]
    assert "(run 2, branch" in summary
    assert "1 file changed in this round" in summary
    assert "unchanged since run 1" in summary
    # The first round's diff is in its run, closed.
    assert '<details class="run-diff">' in html
    assert f'href="#work-diff-{second.pk}">Change</a>' in html


def test_a_review_shows_the_change_it_reviews(client, viewer, tmp_path):
    task, run, _ = task_with_change(tmp_path, huge=False)
    review = Task.objects.create(goal=f"Review #{task.pk}", lane="qa", parent=task, stage="review")
    html = page(client, viewer, review)
    assert "The change under review" in html
    assert "<code>app.py</code>" in html


def test_a_task_without_a_change_shows_no_diff(client, viewer):
    task = lifecycle.submit("Nothing yet", lane="backend", actor="cli")
    html = page(client, viewer, task)
    assert 'class="diff"' not in html


# --- vibe ---------------------------------------------------------------------------------


def vibe(*args: str) -> str:
    out = StringIO()
    call_command("vibe", *args, stdout=out)
    return out.getvalue()


def test_vibe_diff_prints_the_stored_patch(tmp_path):
    task, run, _ = task_with_change(tmp_path, huge=False)
    assert vibe("diff", str(task.pk)) == run.patch
    data = json.loads(vibe("diff", str(task.pk), "--json"))
    assert (data["run"], data["run_id"], data["patch"]) == (1, run.pk, run.patch)
    assert data["head_commit"] == run.head_commit
    assert vibe("diff", str(task.pk), "--run", "1") == run.patch


def test_vibe_diff_refuses_unknown_tasks_and_tasks_without_a_change(tmp_path):
    with pytest.raises(CommandError, match="^task 9999 does not exist$"):
        vibe("diff", "9999")
    task = lifecycle.submit("Nothing yet", lane="backend", actor="cli")
    with pytest.raises(CommandError, match=f"^task {task.pk} has no stored change"):
        vibe("diff", str(task.pk))
    with pytest.raises(CommandError, match=f"^task {task.pk} has no run 3 \\(it has 0 runs\\)$"):
        vibe("diff", str(task.pk), "--run", "3")


def test_vibe_diff_from_a_shell_is_one_line_and_exit_1(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    # The shell's own database (a fresh one, migrated), not the test's.
    env = {**__import__("os").environ, "VIBE_VAR_DIR": str(tmp_path)}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=REPO_ROOT,
        check=True,
        env=env,
    )
    proc = subprocess.run(
        [sys.executable, "manage.py", "vibe", "diff", "987654321"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == "vibe: task 987654321 does not exist\n"
    assert proc.stdout == ""


def test_vibe_task_json_has_the_change(tmp_path):
    task, run, _ = task_with_change(tmp_path, huge=False)
    data = json.loads(vibe("task", str(task.pk), "--json"))
    assert data["branch"] == f"vibe/task-{task.pk}"
    assert data["base_commit"] == run.base_commit
    assert data["head_commit"] == run.head_commit
    paths = {f["path"]: f for f in data["changed_files"]}
    assert paths["app.py"] == {"path": "app.py", "added": 3, "removed": 1}
    assert paths["logo.png"]["added"] is None
    text = vibe("task", str(task.pk))
    line = f"branch vibe/task-{task.pk} at {run.head_commit[:12]}, 7 files changed"
    assert f"{line} (vibe diff {task.pk})" in text.splitlines()
