"""`python manage.py vibe …` — the factory from a terminal.

The same grammar as `/vibe` in Slack and Discord (`chatops_app.grammar`), plus what only an
operator at a shell does: submit work, pause workers, link chat users, reap expired leases.
Every subcommand takes `--json`. Errors are one line on stderr with exit status 1; usage errors
exit with status 2.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from argparse import ArgumentTypeError

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from chatops_app import grammar
from chatops_app.discord import api as discord_api
from chatops_app.models import ChatLink, Platform
from chatops_app.reads import dlq_reply, status_reply, task_reply, worker_reply
from chatops_app.replies import Reply
from tasks_app import actions, actors, costs, lifecycle
from tasks_app.actions import ACTION_PERMISSIONS, can
from tasks_app.choices import Lane, Risk, Status
from tasks_app.costs import json_usd as _usd
from tasks_app.models import Run, Task
from tasks_app.pipeline import PIPELINES
from tasks_app.taskfile import read_task_file
from tasks_app.transcripts import _events_by_run, _run_data, _run_ids, _run_transcript_lines
from workers_app.models import Worker
from workers_app.workspace import instance_id

USAGE_ERROR = 2
DLQ_MAX_LIMIT = 1_000_000


def _usage(message: str) -> CommandError:
    return CommandError(message, returncode=USAGE_ERROR)


def _task_id(value: str) -> int:
    try:
        number = int(value.lstrip("#"))
    except ValueError:
        raise ArgumentTypeError(f"{value!r} is not a task id; task ids are whole numbers") from None
    if number < 1:
        raise ArgumentTypeError(f"{value!r} is not a task id; task ids are positive")
    return number


def _priority(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ArgumentTypeError(f"priority {value!r} is not a whole number") from None
    if not 0 <= number <= 100:
        raise ArgumentTypeError(f"priority {number} is out of range; use 0 to 100")
    return number


def _run_number(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise ArgumentTypeError(f"{value!r} is not a run number; runs are numbered from 1")
    return int(value)


# C0 controls but newline and tab, DEL and C1: what a terminal acts on instead of showing.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters shown as `\\xNN`, never acted on.

    Goals, errors and transcripts are written by agents and chat users; an ESC in them would
    otherwise retitle the window, clear the screen or hide lines from the person reading.
    """
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _worker_id(value: str) -> str:
    value = value.strip()
    return value if value.startswith("@") else "@" + value


class Command(BaseCommand):
    help = "Steer the factory: submit, status, retry, approve, cancel, dlq, worker, task, …"

    def add_arguments(self, parser: CommandParser) -> None:
        common = CommandParser(add_help=False)
        common.add_argument("--json", action="store_true", help="print JSON for scripts")
        common.add_argument(
            "--as",
            dest="as_user",
            metavar="USERNAME",
            help="act as this user (their permissions apply; recorded as user:NAME)",
        )
        sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)

        p = sub.add_parser("submit", parents=[common], help="submit a task (or many from a file)")
        p.add_argument("goal", nargs="?", help="what the task should achieve")
        p.add_argument("--lane", choices=Lane.values)
        p.add_argument("--priority", type=_priority, default=50, help="0–100, higher first")
        p.add_argument("--risk", choices=Risk.values, default=Risk.LOW)
        p.add_argument("--pipeline", choices=sorted(PIPELINES), help="override the lane's reviews")
        p.add_argument(
            "--after", type=_task_id, nargs="+", default=[], metavar="ID", help="prerequisites"
        )
        p.add_argument(
            "--deliver",
            choices=("branch", "merge", "pull_request"),
            help="how the reviewed work reaches the team (default: VIBE_DELIVERY)",
        )
        p.add_argument(
            "--key",
            metavar="KEY",
            default="",
            help="an idempotency key: submitting the same key again returns the first task",
        )
        p.add_argument("--from-file", metavar="FILE", help="JSON Lines or one goal per line")

        sub.add_parser("status", parents=[common], help="workers by lane and tasks by status")
        for name, text in (
            ("retry", "send a dead-letter or blocked task back to pending"),
            ("approve", "approve a high-risk task"),
            ("cancel", "cancel an open task"),
            ("merge", "merge a reviewed task's branch into its base branch (merge delivery)"),
            ("rebase", "rebase and rework: the builder rebases a conflicting branch onto its base"),
            ("task", "one task with its full history"),
        ):
            p = sub.add_parser(name, parents=[common], help=text)
            if name in ("retry", "cancel"):  # several at once: each id is answered
                p.add_argument(
                    "task_ids", type=_task_id, nargs="*" if name == "retry" else "+", metavar="ID"
                )
            else:
                p.add_argument("task_id", type=_task_id, metavar="ID")
            if name == "rebase":
                p.add_argument("comment", nargs="?", default="", help="more for the builder")
            if name == "retry":
                p.add_argument(
                    "--all",
                    action="store_true",
                    help="every dead-letter and blocked task (narrow it with --lane, --error)",
                )
                p.add_argument("--lane", choices=Lane.values, help="with --all: only this lane")
                p.add_argument(
                    "--error", metavar="TYPE", help="with --all: only this error type (timeout, …)"
                )
                p.add_argument("--yes", action="store_true", help="with --all: do not ask first")
            if name == "task":
                p.add_argument(
                    "--transcript",
                    action="store_true",
                    help="print every run's transcript: messages, tool calls, results, errors",
                )

        p = sub.add_parser(
            "rework",
            parents=[common],
            help="ask for changes: a rework round for the builder, on the same branch",
        )
        p.add_argument("task_id", type=_task_id, metavar="ID")
        p.add_argument("comment", metavar="COMMENT", help="what should change")

        p = sub.add_parser(
            "diff", parents=[common], help="the change a task's builder run left, as a unified diff"
        )
        p.add_argument("task_id", type=_task_id, metavar="ID")
        p.add_argument(
            "--run",
            type=_run_number,
            metavar="N",
            help="run N of the task (as `vibe task ID --transcript` numbers them); "
            "default: its latest builder run with a change",
        )

        p = sub.add_parser("dlq", parents=[common], help="dead-letter tasks, newest first")
        p.add_argument("--limit", type=int, default=50)
        for name, text in (
            ("worker", "one worker: lane, tier, status, heartbeat, load, current tasks"),
            ("pause", "pause a worker: it finishes what it runs and claims nothing new"),
            ("resume", "let a paused or draining worker claim again"),
            (
                "retire",
                "take a stopped worker (no heartbeat, no running task) out of the pool and the "
                "counts; its tasks keep its name, and it is back if it heartbeats again",
            ),
        ):
            p = sub.add_parser(name, parents=[common], help=text)
            p.add_argument("worker_id", type=_worker_id, metavar="WORKER")

        workspace_help = (
            "Slack team id (T…) or Discord server id the link counts in (default: any of ours)"
        )
        p = sub.add_parser("link", parents=[common], help="link a chat user to a Django user")
        p.add_argument("platform", choices=Platform.values)
        p.add_argument("external_id", metavar="EXTERNAL_USER_ID")
        p.add_argument("username", metavar="USERNAME")
        p.add_argument("--workspace", default="", metavar="TEAM_OR_GUILD_ID", help=workspace_help)
        p = sub.add_parser("unlink", parents=[common], help="remove a chat user's link")
        p.add_argument("platform", choices=Platform.values)
        p.add_argument("external_id", metavar="EXTERNAL_USER_ID")
        p.add_argument(
            "--workspace",
            metavar="TEAM_OR_GUILD_ID",
            help="only the link in this workspace (default: every link of this chat user)",
        )

        sub.add_parser("reap", parents=[common], help="requeue tasks whose lease expired")
        sub.add_parser(
            "discord-register", parents=[common], help="register /vibe with Discord's API"
        )

    # --- plumbing -----------------------------------------------------------------------------

    def run_from_argv(self, argv: list[str]) -> None:
        """One line on stderr instead of Django's `CommandError:` banner."""
        try:
            super().run_from_argv(argv)
        except KeyboardInterrupt:
            sys.stderr.write("vibe: interrupted\n")
            sys.exit(130)

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            if options.get("traceback") or not getattr(self, "_called_from_command_line", False):
                raise
            self.stderr.write(printable(f"vibe: {exc}"))
            sys.exit(exc.returncode)

    def _out(self, options: dict, text: str, data: dict, *, raw: bool = False) -> None:
        """`raw`: text meant for a pipe (a patch), kept byte-exact unless a terminal shows it."""
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2, default=str))
        elif raw and not self.stdout.isatty():
            self.stdout.write(text)
        else:
            self.stdout.write(printable(text))

    def _actor(self, options: dict, action: str | None = None):
        """(actor, user, trusted): the shell is trusted unless it names a user with --as."""
        username = options.get("as_user")
        if not username:
            return "cli", None, True
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if not user.is_active:  # a switched-off account keeps its flags, superuser too
            reason = f"user {username} is inactive"
            if action:
                target = options.get("task_id") or options.get("worker_id") or ""
                lifecycle.refused(
                    action, str(target), actor=actors.user(username), reason=reason, door="cli"
                )
            raise CommandError(reason)
        if action and not can(user, action):
            reason = (
                f"{username} does not have the permission to {action} "
                f"({ACTION_PERMISSIONS[action]})"
            )
            target = options.get("task_id") or options.get("worker_id") or ""
            lifecycle.refused(
                action, str(target), actor=actors.user(username), reason=reason, door="cli"
            )
            raise CommandError(reason)
        return actors.user(username), user, False

    def _reply(self, options: dict, reply: Reply) -> None:
        if not reply.ok:
            raise CommandError(reply.title)
        self._out(options, reply.as_text(), reply.data)

    # --- subcommands --------------------------------------------------------------------------

    def handle(self, *args, subcommand: str, **options) -> None:
        if options["verbosity"] < 2:
            logging.getLogger().setLevel(logging.WARNING)
        handler = getattr(self, "do_" + subcommand.replace("-", "_"))
        if options.get("as_user"):  # every subcommand: a missing or inactive user is refused
            self._actor(options, subcommand if subcommand in ACTION_PERMISSIONS else None)
        try:
            handler(options)
        except lifecycle.LifecycleError as exc:  # the action table recorded the refusal
            raise CommandError(str(exc)) from None

    def do_submit(self, options: dict) -> None:
        actor, _, _ = self._actor(options, "submit")
        if options["from_file"]:
            if options["goal"]:
                raise _usage("give a GOAL or --from-file, not both")
            self._submit_file(options, actor)
            return
        if not options["goal"]:
            raise _usage('say what the task should achieve: vibe submit "GOAL" --lane LANE')
        if not options["lane"]:
            raise _usage(f"--lane is required; choose one of {', '.join(Lane.values)}")
        task = lifecycle.submit(
            options["goal"],
            lane=options["lane"],
            priority=options["priority"],
            risk=options["risk"],
            depends_on=options["after"],
            pipeline=options["pipeline"],
            delivery=options["deliver"],
            key=options["key"],
            actor=actor,
        )
        text = str(task.pk)
        before = getattr(task, "was_submitted_before", False)
        if before:
            text += f"  (already submitted with key {options['key']!r}; nothing new was made)"
        elif task.status != "pending":
            text += f"  (awaiting approval: vibe approve {task.pk})"
        data = {"ok": True, "id": task.pk, "status": task.status, "existing": before}
        self._out(options, text, data)

    def _submit_file(self, options: dict, actor: str) -> None:
        specs = read_task_file(options["from_file"], default_lane=options["lane"])
        show_progress = sys.stderr.isatty() and not options["json"]

        def progress(done: int, total: int) -> None:
            if show_progress and (done == total or done % 25 == 0):
                width = 30
                filled = int(width * done / total)
                bar = "#" * filled + "-" * (width - filled)
                sys.stderr.write(f"\rsubmitting [{bar}] {done}/{total}")
                sys.stderr.flush()

        try:
            tasks = lifecycle.submit_many(specs, actor=actor, progress=progress)
        except lifecycle.LifecycleError as exc:
            raise CommandError(f"{options['from_file']}: {exc}; nothing was submitted") from None
        finally:
            if show_progress:
                sys.stderr.write("\n")
        ids = [t.pk for t in tasks]
        self._out(
            options,
            f"submitted {len(ids)} task{'s' if len(ids) != 1 else ''}: {ids[0]}–{ids[-1]}",
            {"ok": True, "ids": ids},
        )

    def do_status(self, options: dict) -> None:
        reply = status_reply()
        if reply.ok:
            by_lane = costs.today_by_lane()
            total = sum(by_lane.values(), costs.ZERO)
            reply.lines.append(f"Spent today: {costs.format_usd(total)}")
            reply.lines += [
                f"  • {lane}: {costs.format_usd(amount)}"
                for lane, amount in sorted(by_lane.items(), key=lambda i: (-i[1], i[0]))
            ]
            reply.data["spend_today"] = {
                "total_usd": _usd(total),
                "by_lane": {lane: _usd(amount) for lane, amount in sorted(by_lane.items())},
            }
            # Its branches are vibe/<instance>/…, its worktrees <instance>-task-<id>.
            reply.lines.append(f"Factory instance: {instance_id()}")
            reply.data["instance_id"] = instance_id()
        self._reply(options, reply)

    def do_dlq(self, options: dict) -> None:
        if options["limit"] < 1:
            raise _usage("--limit must be at least 1")
        if options["limit"] > DLQ_MAX_LIMIT:  # and the database's LIMIT holds it
            raise _usage(f"--limit must be at most {DLQ_MAX_LIMIT}")
        self._reply(options, dlq_reply(limit=options["limit"]))

    def do_task(self, options: dict) -> None:
        reply = task_reply(str(options["task_id"]))
        if not reply.ok:
            self._reply(options, reply)
            return
        task_id = options["task_id"]
        runs = list(Run.objects.filter(task_id=task_id).order_by("started_at", "id"))
        usage = costs.task_usage(task_id)
        reply.data["cost"] = {**usage, "cost_usd": _usd(usage["cost_usd"])}
        reply.lines.append(
            f"cost {costs.format_usd(usage['cost_usd'])} with its reviews, "
            f"{len(runs)} run{'s' if len(runs) != 1 else ''} of its own"
        )
        task = Task.objects.only("branch", "head_commit", "result").get(pk=task_id)
        result = task.result if isinstance(task.result, dict) else {}
        change = {
            "branch": task.branch,
            "base_commit": result.get("base_commit") or "",
            "head_commit": task.head_commit,
            "changed_files": result.get("changed_files") or [],
        }
        reply.data.update(change)
        if task.branch:
            files = len(change["changed_files"])
            reply.lines.append(
                f"branch {task.branch}"
                + (f" at {task.head_commit[:12]}" if task.head_commit else "")
                + (f", {files} file{'s' if files != 1 else ''} changed (vibe diff {task_id})")
            )
        if options["json"] or options["transcript"]:
            events = _events_by_run(runs)
            reply.data["runs"] = [_run_data(run, events[run.pk]) for run in runs]
            if options["transcript"]:
                for number, run in enumerate(runs, start=1):
                    reply.lines += _run_transcript_lines(number, run, events[run.pk])
        self._reply(options, reply)

    def do_diff(self, options: dict) -> None:
        task_id, number = options["task_id"], options["run"]
        task = Task.objects.filter(pk=task_id).only("id", "parent_id", "stage").first()
        if task is None:
            raise CommandError(f"task {task_id} does not exist")
        if number is not None:
            ids = _run_ids(task_id)
            if number > len(ids):
                raise CommandError(
                    f"task {task_id} has no run {number} "
                    f"(it has {len(ids)} run{'s' if len(ids) != 1 else ''})"
                )
            run = Run.objects.get(pk=ids[number - 1])
            if not run.patch:
                raise CommandError(f"run {number} of task {task_id} left no stored change")
        else:
            # A review shows the change of the work it reviews, as the task page does.
            changed = Run.objects.filter(task_id=costs.work_root_id(task)).exclude(patch="")
            latest = changed.order_by("-started_at", "-id").first()
            if latest is None:
                raise CommandError(
                    f"task {task_id} has no stored change: no builder run of it left a diff"
                )
            run = latest
            number = _run_ids(run.task_id).index(run.pk) + 1
        data = {
            "ok": True,
            "task_id": run.task_id,
            "run": number,
            "run_id": run.pk,
            "base_commit": run.base_commit,
            "head_commit": run.head_commit,
            "changed_files": run.changed_files,
            "patch": run.patch,
        }
        self._out(options, run.patch, data, raw=True)

    def do_worker(self, options: dict) -> None:
        reply = worker_reply(options["worker_id"])
        if reply.ok:
            worker_id = reply.data["worker_id"]
            spent = costs.today_by_worker().get(worker_id, costs.ZERO)
            reason = (
                Worker.objects.filter(pk=worker_id).values_list("status_reason", flat=True).first()
            )
            reply.data["spend_today_usd"] = _usd(spent)
            reply.data["status_reason"] = reason or ""
            reply.lines.insert(2, f"spent today {costs.format_usd(spent)}")
            if reason:
                reply.lines.insert(1, f"why: {reason}")
        self._reply(options, reply)

    def _chat_action(self, action: str, options: dict, comment: str = "") -> None:
        """approve, merge, rework and rebase run through the chat grammar, so every door
        answers alike."""
        actor, user, trusted = self._actor(options, action)
        text = f"{action} {options['task_id']} {comment}".strip()
        reply = grammar.execute(text, user=user, actor=actor, door="cli", trusted=trusted)
        self._reply(options, reply)

    def _many(self, action: str, options: dict, ids: list[int]) -> None:
        """`action` on each id through the grammar; an id refused makes the exit status 1."""
        actor, user, trusted = self._actor(options, action)
        reply = grammar.act_many(action, ids, user=user, actor=actor, door="cli", trusted=trusted)
        if not reply.ok and reply.lines:  # some were done: show what happened to each
            self._out(options, reply.as_text(), reply.data)
        self._reply(options, reply)

    def do_retry(self, options: dict) -> None:
        ids = options["task_ids"]
        if options["all"]:
            if ids:
                raise _usage("give task ids or --all, not both")
            ids = self._retryable(options)
            if not ids:
                self._out(options, "Nothing to retry", {"ok": True, "ids": []})
                return
        elif not ids:
            raise _usage("say which tasks: vibe retry ID [ID …], or vibe retry --all")
        elif options["lane"] or options["error"] or options["yes"]:
            raise _usage("--lane, --error and --yes go with --all")
        self._many("retry", options, ids)

    def _retryable(self, options: dict) -> list[int]:
        """The dead-letter and blocked tasks --all means, after the person said yes."""
        self._actor(options, "retry")  # refused before the list is shown, not after
        found = Task.objects.filter(status__in=(Status.DEAD_LETTER, Status.BLOCKED))
        if options["lane"]:
            found = found.filter(lane=options["lane"])
        if options["error"]:
            found = found.filter(last_error_type=options["error"])
        rows = list(found.order_by("pk").values_list("pk", "lane", "last_error_type"))
        if not rows or options["yes"]:
            return [pk for pk, _, _ in rows]
        shown = ", ".join(f"#{pk} ({lane}, {error or 'error'})" for pk, lane, error in rows[:20])
        more = f" and {len(rows) - 20} more" if len(rows) > 20 else ""
        # On stderr, so `--json` output stays JSON; the answer is read from stdin (a pipe works).
        plural = "s" if len(rows) != 1 else ""
        self.stderr.write(printable(f"This retries {len(rows)} task{plural}: {shown}{more}"))
        self.stderr.write("Retry them? [y/N] ", ending="")
        self.stderr.flush()
        answer = sys.stdin.readline()
        if answer.strip().lower() not in ("y", "yes"):
            raise CommandError("nothing was retried")
        return [pk for pk, _, _ in rows]

    def do_approve(self, options: dict) -> None:
        self._chat_action("approve", options)

    def do_merge(self, options: dict) -> None:
        self._chat_action("merge", options)

    def do_rebase(self, options: dict) -> None:
        self._chat_action("rebase", options, options["comment"])

    def do_rework(self, options: dict) -> None:
        self._chat_action("rework", options, options["comment"])

    def do_cancel(self, options: dict) -> None:
        self._many("cancel", options, options["task_ids"])

    def _worker_action(self, action: str, options: dict, said: str) -> None:
        """pause, resume and retire: one row of the worker action table each."""
        actor, _, _ = self._actor(options, action)
        worker = actions.WORKER_ACTIONS[action].perform(options["worker_id"], actor=actor)
        if action == "resume" and not worker.is_alive:
            said += "; it has no live process, so it claims once it is started"
        self._out(
            options,
            f"{worker.pk} {said}",
            {
                "ok": True,
                "worker_id": worker.pk,
                "status": "retired" if action == "retire" else worker.status,
                "alive": worker.is_alive,
            },
        )

    def do_pause(self, options: dict) -> None:
        self._worker_action(
            "pause", options, "paused: it finishes its running tasks and claims nothing new"
        )

    def do_resume(self, options: dict) -> None:
        self._worker_action("resume", options, "resumed")

    def do_retire(self, options: dict) -> None:
        self._worker_action(
            "retire",
            options,
            "retired: out of the pool and the counts (its tasks keep its name); it is back if "
            "it heartbeats again",
        )

    def do_link(self, options: dict) -> None:
        self._require_superuser_or_shell(options)
        platform, external_id = options["platform"], options["external_id"].strip()
        workspace = options["workspace"].strip()
        _check_external_id(platform, external_id)
        _check_workspace(platform, workspace)
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user named {options['username']!r}")
        with transaction.atomic():
            link, created = ChatLink.objects.update_or_create(
                platform=platform,
                workspace=workspace,
                external_id=external_id,
                defaults={"user": user},
            )
        verb = "linked" if created else "re-linked"
        where = f" in {workspace}" if workspace else ""
        self._out(
            options,
            f"{verb} {platform}:{external_id}{where} → {user.get_username()}",
            {
                "ok": True,
                "platform": platform,
                "workspace": workspace,
                "external_id": external_id,
                "user": user.username,
            },
        )

    def do_unlink(self, options: dict) -> None:
        self._require_superuser_or_shell(options)
        links = ChatLink.objects.filter(
            platform=options["platform"], external_id=options["external_id"].strip()
        )
        workspace = options["workspace"]
        where = ""
        if workspace is not None:
            links = links.filter(workspace=workspace.strip())
            where = f" in {workspace.strip()}" if workspace.strip() else " (any workspace)"
        deleted, _ = links.delete()
        if not deleted:
            raise CommandError(
                f"{options['platform']}:{options['external_id']} is not linked{where}"
            )
        self._out(
            options,
            f"unlinked {options['platform']}:{options['external_id']}{where}",
            {"ok": True, "deleted": deleted},
        )

    def do_reap(self, options: dict) -> None:
        count = lifecycle.requeue_expired()
        self._out(
            options,
            f"requeued {count} task{'s' if count != 1 else ''} whose lease expired",
            {"ok": True, "requeued": count},
        )

    def do_discord_register(self, options: dict) -> None:
        try:
            result = discord_api.register_commands()
        except discord_api.DiscordError as exc:
            raise CommandError(str(exc)) from None
        self._out(options, "registered /vibe with Discord", {"ok": True, "result": result})

    def _require_superuser_or_shell(self, options: dict) -> None:
        actor, user, trusted = self._actor(options)
        if not trusted and not user.is_superuser:
            raise CommandError("only a superuser (or the shell without --as) can link chat users")


# --- Chat links ------------------------------------------------------------------------------


def _check_workspace(platform: str, workspace: str) -> None:
    """A Slack team id (T…) or a Discord server (guild) id; "" is any workspace."""
    if not workspace:
        return
    if platform == Platform.SLACK:
        if not (workspace[:1] == "T" and workspace.isalnum() and len(workspace) > 2):
            raise _usage(f"{workspace!r} is not a Slack team id (like T024BE7LD)")
    elif not (workspace.isdigit() and 15 <= len(workspace) <= 21):
        raise _usage(f"{workspace!r} is not a Discord server id (a 17–20 digit number)")


def _check_external_id(platform: str, external_id: str) -> None:
    if platform == Platform.SLACK:
        if not (external_id[:1] in ("U", "W") and external_id.isalnum() and len(external_id) > 2):
            raise _usage(f"{external_id!r} is not a Slack user id (like U024BE7LH)")
    elif not (external_id.isdigit() and 15 <= len(external_id) <= 21):
        raise _usage(f"{external_id!r} is not a Discord user id (a 17–20 digit number)")
