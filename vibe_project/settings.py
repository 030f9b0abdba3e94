"""Settings for Vibe Factory, read from environment variables.

One module on purpose: every knob is listed in README.md's configuration table, and each
helper below refuses nonsense with ImproperlyConfigured instead of guessing.
"""

from __future__ import annotations

import os
import secrets
import zoneinfo
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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

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
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": VIBE_LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
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
# Where task worktrees of a git VIBE_WORKSPACE live (outside the repository's own checkout).
VIBE_WORKTREES_DIR = env_str("VIBE_WORKTREES_DIR", str(VAR_DIR / "worktrees"))
# Dashboard: cards shown per kanban column (the column header still counts them all).
VIBE_BOARD_CARDS_PER_COLUMN = env_int("VIBE_BOARD_CARDS_PER_COLUMN", 20, minimum=1)

# --- Chat -------------------------------------------------------------------------------------
VIBE_SLACK_SIGNING_SECRET = env_str("VIBE_SLACK_SIGNING_SECRET")
VIBE_SLACK_BOT_TOKEN = env_str("VIBE_SLACK_BOT_TOKEN")
VIBE_SLACK_CHANNEL = env_str("VIBE_SLACK_CHANNEL")
VIBE_SLACK_API_URL = env_str("VIBE_SLACK_API_URL", "https://slack.com/api/")
VIBE_DISCORD_PUBLIC_KEY = env_str("VIBE_DISCORD_PUBLIC_KEY")
VIBE_DISCORD_APPLICATION_ID = env_str("VIBE_DISCORD_APPLICATION_ID")
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
