"""Settings for Vibe Factory, read from environment variables.

One module on purpose: every knob is listed in README.md's configuration table, and each
helper below refuses nonsense with ImproperlyConfigured instead of guessing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import zoneinfo
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VIBE_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use 1 or 0.")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def _local_secret_key() -> str:
    """A per-checkout key, so a local run never ships a key that is in the repository."""
    path = VAR_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key


DEBUG = env_bool("DJANGO_DEBUG", True)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0.")
    SECRET_KEY = _local_secret_key()

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must be set when DJANGO_DEBUG=0.")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_tables2",
    "tasks_app",
    "workers_app",
    "chatops_app",
    "integrations_app",
    "axes",  # login throttling: failed logins per username and address
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "vibe_project.middleware.RefuseNulMiddleware",  # PostgreSQL cannot take a NUL: 400, not 500
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",
    "vibe_project.errors.ProductNotFoundMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out login before checking it
    "django.contrib.auth.backends.ModelBackend",
]
# After this many failed logins for one username from one address, that pair waits.
AXES_FAILURE_LIMIT = env_int("VIBE_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("VIBE_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

ROOT_URLCONF = "vibe_project.urls"
WSGI_APPLICATION = "vibe_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "vibe_project.context_processors.permissions",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# SQLite by default: WAL so readers never block the writer, IMMEDIATE transactions so writers
# queue on the busy timeout instead of failing with "database is locked" when a read lock
# would have to be upgraded mid-transaction.
SQLITE_BUSY_TIMEOUT_MS = env_int("VIBE_SQLITE_BUSY_TIMEOUT_MS", 20_000, minimum=5_000)
SQLITE_INIT_COMMAND = (
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS};"
    "PRAGMA foreign_keys=ON;"
    # The lifecycle checkpoints every VIBE_SQLITE_CHECKPOINT_EVERY of its commits, outside the
    # writers' queue; SQLite's own checkpoint (inside a commit) is only the safety net.
    "PRAGMA wal_autocheckpoint=10000;"
)
VIBE_SQLITE_CHECKPOINT_EVERY = env_int("VIBE_SQLITE_CHECKPOINT_EVERY", 100, minimum=1)

_default_db_url = f"sqlite:///{VAR_DIR / 'vibe_coding.db'}"
DATABASE_URL = env_str("DATABASE_URL", _default_db_url) or _default_db_url
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("VIBE_DB_CONN_MAX_AGE", 60))
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL I understand: {exc}") from None

if _db["ENGINE"] == "django.db.backends.sqlite3":
    if _db["NAME"] != ":memory:":
        Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    _db["OPTIONS"] = {
        "init_command": SQLITE_INIT_COMMAND,
        "transaction_mode": "IMMEDIATE",
        "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
    }
    # Tests run real worker subprocesses against the test database, so it must be a file.
    _db["TEST"] = {"NAME": str(VAR_DIR / "test_vibe_coding.db")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db.setdefault("OPTIONS", {})
    _db["CONN_HEALTH_CHECKS"] = True
    # Lets several test runs share one server without sharing a test database.
    if env_str("VIBE_TEST_PG_NAME"):
        _db["TEST"] = {"NAME": env_str("VIBE_TEST_PG_NAME")}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("VIBE_TIME_ZONE", "UTC") or "UTC"
try:
    zoneinfo.ZoneInfo(TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(
        f"VIBE_TIME_ZONE={TIME_ZONE!r} is not a time zone; use a name like UTC or Europe/Paris."
    ) from None
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT") or VAR_DIR / "staticfiles")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Without collectstatic (a local run), whitenoise serves straight from the app folders.
WHITENOISE_USE_FINDERS = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# --- Production hardening, switched on by DJANGO_DEBUG=0 ------------------------------------
if not DEBUG:
    # Only behind a proxy that sets it: a client talking to gunicorn directly could claim HTTPS.
    if env_bool("DJANGO_TRUST_PROXY", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

VIBE_LOG_LEVEL = (env_str("VIBE_LOG_LEVEL", "INFO") or "INFO").upper()
if VIBE_LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"VIBE_LOG_LEVEL={VIBE_LOG_LEVEL!r} is not a log level; use DEBUG, INFO, WARNING or ERROR."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"one_line_refusals": {"()": "vibe_project.errors.OneLineRefusals"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": VIBE_LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # A refused request is one line with its reason, not a traceback (vibe_project.errors).
        "django.request": {"filters": ["one_line_refusals"]},
    },
}

# --- The factory ------------------------------------------------------------------------------
VIBE_MAX_ATTEMPTS = env_int("VIBE_MAX_ATTEMPTS", 3, minimum=1)
VIBE_RETRY_BASE_SECONDS = env_float("VIBE_RETRY_BASE_SECONDS", 10.0)
VIBE_RETRY_MAX_SECONDS = env_float("VIBE_RETRY_MAX_SECONDS", 600.0)
VIBE_LEASE_SECONDS = env_int("VIBE_LEASE_SECONDS", 120, minimum=5)
VIBE_HEARTBEAT_STALE_SECONDS = env_int("VIBE_HEARTBEAT_STALE_SECONDS", 90, minimum=5)
VIBE_MAX_REVIEW_ROUNDS = env_int("VIBE_MAX_REVIEW_ROUNDS", 2, minimum=1)
VIBE_WORKSPACE = env_str("VIBE_WORKSPACE")
VIBE_AGENT_PROFILES_FILE = env_str("VIBE_AGENT_PROFILES_FILE")
VIBE_DEFAULT_AGENT = env_str("VIBE_DEFAULT_AGENT", "simulated") or "simulated"
# Where task worktrees of a git VIBE_WORKSPACE live: beside the var folder, not in it, so an
# agent's `../../secret_key` finds nothing. A relative path that names the var folder
# (`../../var/secret_key`) still reaches it, as does an absolute one: only the sandbox below (or
# a worker user who cannot read VAR_DIR) stops an agent that knows the layout.
VIBE_WORKTREES_DIR = env_str(
    "VIBE_WORKTREES_DIR", str(VAR_DIR.parent / f"{VAR_DIR.name}-worktrees")
)
# The shared git remote workers meet at: new work starts from its freshly fetched base branch,
# builders' branches are pushed to it, reviews on any host fetch them from it. Unset: "origin"
# when the repository has one; empty: no remote (one host, branches stay local).
VIBE_GIT_REMOTE = os.environ.get("VIBE_GIT_REMOTE")
VIBE_GIT_REMOTE = VIBE_GIT_REMOTE.strip() if VIBE_GIT_REMOTE is not None else None
# The branch new work starts from. Empty: the remote's default branch (else main or master), or
# the repository's checked-out branch when there is no remote.
VIBE_BASE_BRANCH = env_str("VIBE_BASE_BRANCH")
# A shell command run in each new worktree before its first agent (e.g. "uv sync", "npm ci"),
# with the worker's environment; its output goes to the run's transcript, and a failure (or a
# run past the time limit) is a workspace_error. Empty: none.
VIBE_WORKTREE_SETUP = env_str("VIBE_WORKTREE_SETUP")
VIBE_WORKTREE_SETUP_TIMEOUT = env_int("VIBE_WORKTREE_SETUP_TIMEOUT", 900, minimum=1)
# How finished work reaches the team once every review passed (a task's own choice wins):
# branch = pushed (or committed, with no remote); merge = an Approver merges it into the base;
# pull_request = the factory opens a pull request on GitHub and waits for it to be merged.
VIBE_DELIVERY = (env_str("VIBE_DELIVERY", "branch") or "branch").lower()
if VIBE_DELIVERY not in ("branch", "merge", "pull_request"):
    raise ImproperlyConfigured(
        f"VIBE_DELIVERY={VIBE_DELIVERY!r}: use branch, merge or pull_request."
    )
# merge = always a merge commit; fast-forward = only when the base has not moved (else rebase).
VIBE_MERGE_STYLE = (env_str("VIBE_MERGE_STYLE", "merge") or "merge").lower()
if VIBE_MERGE_STYLE not in ("merge", "fast-forward"):
    raise ImproperlyConfigured(f"VIBE_MERGE_STYLE={VIBE_MERGE_STYLE!r}: use merge or fast-forward.")
# GitHub: pull requests, and the issues, reviews and merges it tells the factory about.
VIBE_GITHUB_TOKEN = env_str("VIBE_GITHUB_TOKEN")
VIBE_GITHUB_REPO = env_str("VIBE_GITHUB_REPO")  # owner/name; default: from the remote's URL
VIBE_GITHUB_API_URL = env_str("VIBE_GITHUB_API_URL", "https://api.github.com").rstrip("/")
VIBE_GITHUB_WEBHOOK_SECRET = env_str("VIBE_GITHUB_WEBHOOK_SECRET")
VIBE_GITHUB_LABEL = env_str("VIBE_GITHUB_LABEL", "vibe") or "vibe"
# Without a public URL for the webhook: how often runfactory polls GitHub (0 = never).
VIBE_GITHUB_POLL_SECONDS = env_int("VIBE_GITHUB_POLL_SECONDS", 60)
# The bearer token Prometheus scrapes /metrics/prometheus with; unset, the exposition is off.
VIBE_METRICS_TOKEN = env_str("VIBE_METRICS_TOKEN")
# How agents are fenced off (workers_app/sandbox.py): auto = bubblewrap when it works here,
# bwrap = always (the worker refuses to start without it), off = plain subprocesses.
VIBE_AGENT_SANDBOX = (env_str("VIBE_AGENT_SANDBOX", "auto") or "auto").lower()
if VIBE_AGENT_SANDBOX not in {"auto", "bwrap", "off"}:
    raise ImproperlyConfigured(
        f"VIBE_AGENT_SANDBOX={VIBE_AGENT_SANDBOX!r} is not a sandbox mode; use auto, bwrap or off."
    )
# More variables of the worker's environment agents may see (NAME, or PREFIX_* for a family);
# the control plane's own never pass.
VIBE_AGENT_ENV = env_list("VIBE_AGENT_ENV", [])
for _name in VIBE_AGENT_ENV:
    if _name.startswith(("DATABASE_URL", "PG", "DJANGO_", "VIBE_")) or _name in {"", "*"}:
        raise ImproperlyConfigured(
            f"VIBE_AGENT_ENV names {_name!r}: DATABASE_URL, PG*, DJANGO_* and VIBE_* variables "
            "are the control plane's and never reach agents."
        )
# More files or folders the sandbox hides from agents (your own secrets), comma-separated.
VIBE_SANDBOX_HIDE = env_list("VIBE_SANDBOX_HIDE", [])
# The project's test command (e.g. "pytest"), which builders and reviewers may run; a profile's
# own test_command wins.
VIBE_TEST_COMMAND = env_str("VIBE_TEST_COMMAND")
# The most event text one run's transcript keeps: its head and its tail, with a marker between.
VIBE_TRANSCRIPT_MAX_BYTES = env_int("VIBE_TRANSCRIPT_MAX_BYTES", 4 * 1024 * 1024, minimum=65_536)
# Dashboard: cards shown per kanban column (the column header still counts them all).
VIBE_BOARD_CARDS_PER_COLUMN = env_int("VIBE_BOARD_CARDS_PER_COLUMN", 20, minimum=1)

# --- Chat -------------------------------------------------------------------------------------
VIBE_SLACK_SIGNING_SECRET = env_str("VIBE_SLACK_SIGNING_SECRET")
VIBE_SLACK_BOT_TOKEN = env_str("VIBE_SLACK_BOT_TOKEN")
VIBE_SLACK_CHANNEL = env_str("VIBE_SLACK_CHANNEL")
VIBE_SLACK_API_URL = env_str("VIBE_SLACK_API_URL", "https://slack.com/api/")
# An app-level token (xapp-…, scope connections:write): `manage.py slacksocket` then serves
# /vibe and its buttons over Socket Mode, without a public URL; runfactory starts it.
VIBE_SLACK_APP_TOKEN = env_str("VIBE_SLACK_APP_TOKEN")
# Our workspace: a signed request from any other team, Enterprise Grid org or Slack app is
# refused with 403 (unset: accepted from anywhere, and `manage.py check` warns).
VIBE_SLACK_TEAM_IDS = env_list("VIBE_SLACK_TEAM_IDS", [])
VIBE_SLACK_ENTERPRISE_IDS = env_list("VIBE_SLACK_ENTERPRISE_IDS", [])
VIBE_SLACK_APP_ID = env_str("VIBE_SLACK_APP_ID")
VIBE_DISCORD_PUBLIC_KEY = env_str("VIBE_DISCORD_PUBLIC_KEY")
VIBE_DISCORD_APPLICATION_ID = env_str("VIBE_DISCORD_APPLICATION_ID")
# Our servers: interactions from other guilds, and DMs, are refused with 403 when set.
VIBE_DISCORD_GUILD_IDS = env_list("VIBE_DISCORD_GUILD_IDS", [])
VIBE_DISCORD_BOT_TOKEN = env_str("VIBE_DISCORD_BOT_TOKEN")
VIBE_DISCORD_CHANNEL_ID = env_str("VIBE_DISCORD_CHANNEL_ID")
VIBE_DISCORD_API_URL = env_str("VIBE_DISCORD_API_URL", "https://discord.com/api/v10")

# --- Outbound notifications (chatops_app/outbox.py) --------------------------------------------
# Where people open a task from a chat message, e.g. https://factory.example.com (no link if unset).
VIBE_BASE_URL = env_str("VIBE_BASE_URL").rstrip("/")
if VIBE_BASE_URL and not VIBE_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"VIBE_BASE_URL={VIBE_BASE_URL!r} must start with http(s)://.")
VIBE_NOTIFY_TIMEOUT_SECONDS = env_float("VIBE_NOTIFY_TIMEOUT_SECONDS", 10.0, minimum=0.1)
VIBE_NOTIFY_RETRY_BASE_SECONDS = env_float("VIBE_NOTIFY_RETRY_BASE_SECONDS", 15.0)
VIBE_NOTIFY_RETRY_MAX_SECONDS = env_float("VIBE_NOTIFY_RETRY_MAX_SECONDS", 3600.0)
VIBE_NOTIFY_PERMANENT_TRIES = env_int("VIBE_NOTIFY_PERMANENT_TRIES", 3, minimum=1)

# --- Circuit breaker, budgets and prices (workers_app/breaker.py, workers_app/budgets.py) -----
# A worker whose agent fails this many times in a row for an infrastructure reason (missing
# agent, refused credentials, broken sandbox or workspace) pauses itself and gives the attempts
# back, instead of burning through every task in its lane.
VIBE_WORKER_FAILURE_LIMIT = env_int("VIBE_WORKER_FAILURE_LIMIT", 3, minimum=1)


def env_usd(name: str) -> Decimal | None:
    """An optional amount of dollars, more than zero; unset (or empty) means no limit."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = Decimal(raw.strip().removeprefix("$"))
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an amount of dollars.") from None
    if not value.is_finite() or value <= 0:
        raise ImproperlyConfigured(
            f"{name}={raw!r} must be more than 0 dollars; unset it for no budget."
        )
    return value


# What one piece of work (builder runs, reviews, rework) may spend, and the whole factory per day
# (the day starts at midnight in VIBE_TIME_ZONE). Unset: no budget.
VIBE_TASK_BUDGET_USD = env_usd("VIBE_TASK_BUDGET_USD")
VIBE_DAILY_BUDGET_USD = env_usd("VIBE_DAILY_BUDGET_USD")

# USD per million tokens, for agents that report tokens but no cost (Codex, Gemini). Claude Code
# and Aider print their own cost, which wins. `input_includes_cache_read`: the provider counts
# cached tokens inside input_tokens (OpenAI, Google), so they are not charged twice. A model
# reported as "claude-sonnet-4-5-20250929" uses the longest name here it starts with.
_PRICE_FIELDS = ("input", "output", "cache_read", "cache_write")
DEFAULT_MODEL_PRICES: dict[str, dict] = {
    "claude-opus-4-5": {"input": 5, "output": 25, "cache_read": 0.5, "cache_write": 6.25},
    "claude-opus-4-1": {"input": 15, "output": 75, "cache_read": 1.5, "cache_write": 18.75},
    "claude-opus-4": {"input": 15, "output": 75, "cache_read": 1.5, "cache_write": 18.75},
    "claude-sonnet-4-5": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75},
    "claude-sonnet-4": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75},
    "claude-haiku-4-5": {"input": 1, "output": 5, "cache_read": 0.1, "cache_write": 1.25},
    "claude-3-5-haiku": {"input": 0.8, "output": 4, "cache_read": 0.08, "cache_write": 1},
    "gpt-5": {"input": 1.25, "output": 10, "cache_read": 0.125, "input_includes_cache_read": True},
    "gpt-5-codex": {
        "input": 1.25,
        "output": 10,
        "cache_read": 0.125,
        "input_includes_cache_read": True,
    },
    "gpt-5.1": {
        "input": 1.25,
        "output": 10,
        "cache_read": 0.125,
        "input_includes_cache_read": True,
    },
    "gpt-5-mini": {
        "input": 0.25,
        "output": 2,
        "cache_read": 0.025,
        "input_includes_cache_read": True,
    },
    "gpt-4.1": {"input": 2, "output": 8, "cache_read": 0.5, "input_includes_cache_read": True},
    "o3": {"input": 2, "output": 8, "cache_read": 0.5, "input_includes_cache_read": True},
    "gemini-2.5-pro": {
        "input": 1.25,
        "output": 10,
        "cache_read": 0.125,
        "input_includes_cache_read": True,
    },
    "gemini-2.5-flash": {
        "input": 0.3,
        "output": 2.5,
        "cache_read": 0.03,
        "input_includes_cache_read": True,
    },
    "gemini-2.5-flash-lite": {
        "input": 0.1,
        "output": 0.4,
        "cache_read": 0.01,
        "input_includes_cache_read": True,
    },
    "gemini-3-pro": {
        "input": 2,
        "output": 12,
        "cache_read": 0.2,
        "input_includes_cache_read": True,
    },
}


def env_model_prices(name: str, defaults: dict[str, dict]) -> dict[str, dict]:
    """The price table: the defaults, with models added or replaced by JSON in `name`, e.g.
    {"my-model": {"input": 2, "output": 8, "cache_read": 0.2, "cache_write": 2.5}}.

    Prices become Decimals; a missing cache price is the input price (never undercounts).
    """
    table = {**defaults, **_env_json_object(name)}
    return {
        str(model).lower(): _model_price(f"{name}: model {model!r}", entry)
        for model, entry in table.items()
    }


def _env_json_object(name: str) -> dict:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        given = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(given, dict):
        raise ImproperlyConfigured(f'{name} must be a JSON object: {{"model": {{…}}}}.')
    return given


def _model_price(where: str, entry: object) -> dict:
    if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
        raise ImproperlyConfigured(f"{where} needs at least input and output prices.")
    unknown = set(entry) - {*_PRICE_FIELDS, "input_includes_cache_read"}
    if unknown:
        raise ImproperlyConfigured(f"{where}: unknown key(s) {', '.join(sorted(unknown))}.")
    price: dict = {"input_includes_cache_read": bool(entry.get("input_includes_cache_read"))}
    for key in _PRICE_FIELDS:
        price[key] = _price_amount(f"{where}: {key}", entry.get(key, entry["input"]))
    return price


def _price_amount(where: str, value: object) -> Decimal:
    try:
        if isinstance(value, bool):
            raise InvalidOperation
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ImproperlyConfigured(f"{where}={value!r} is not a price.") from None
    if not amount.is_finite() or amount < 0:
        raise ImproperlyConfigured(f"{where}={value!r} must be 0 or more.")
    return amount


VIBE_MODEL_PRICES = env_model_prices("VIBE_MODEL_PRICES", DEFAULT_MODEL_PRICES)
# Agent profiles of your own as a JSON object, {"name": {"kind": "claude", "model": "opus"}}:
# they override the built-ins, and VIBE_AGENT_PROFILES_FILE's profiles override them.
VIBE_AGENT_PROFILES = _env_json_object("VIBE_AGENT_PROFILES")

# The author of the worker's commits, "Name <email>". Empty: "<worker id> <vibe@<hostname>>".
VIBE_GIT_AUTHOR = env_str("VIBE_GIT_AUTHOR")
if VIBE_GIT_AUTHOR and not re.fullmatch(
    r"[^<>]*[^<>\s][^<>]* <[^<>\s@]+@[^<>\s]+>", VIBE_GIT_AUTHOR
):
    raise ImproperlyConfigured(
        f"VIBE_GIT_AUTHOR={VIBE_GIT_AUTHOR!r} must look like 'Vibe Factory <vibe@example.com>'."
    )
