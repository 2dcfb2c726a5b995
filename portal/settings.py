"""Settings, read from the environment (see README "Configuration" and .env.example)."""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def env_rate(name: str, default: str) -> tuple[int, int]:
    """A rate such as ``600/10m`` (django-ratelimit's form: a count, then per how many
    seconds, minutes, hours or days) as ``(count, seconds)``."""
    value = os.environ.get(name) or default
    count, _, period = value.strip().partition("/")
    unit, multiple = period[-1:], period[:-1] or "1"
    if not (count.isdigit() and multiple.isdigit() and unit in _PERIOD_SECONDS):
        raise ImproperlyConfigured(f"{name} is a count per period such as 600/10m, not {value!r}")
    if int(count) < 1 or int(multiple) < 1:
        raise ImproperlyConfigured(f"{name}: the count and the period are at least 1")
    return int(count), int(multiple) * _PERIOD_SECONDS[unit]


def env_datetime(name: str) -> datetime | None:
    """An ISO 8601 date or date and time (UTC unless it says otherwise), or None when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is an ISO 8601 date and time, not {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


DEBUG = env_bool("DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set SECRET_KEY (or DEBUG=1 for a local run).")
    SECRET_KEY = "insecure-local-development-key"
# Former keys, still accepted for what was signed with them (the visitors' ID-sync cookies
# among others) while a new SECRET_KEY takes over.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",  # django.contrib.admin with the portal's AdminSite
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_rq",
    "axes",
    "csp",
    "partners",
    "segments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # A NUL in the path or query (which PostgreSQL text cannot hold) answers 400, not 500.
    "portal.middleware.NulRefusedMiddleware",
    # Last, as django-axes asks: it turns a lockout into the portal's "too many attempts" page.
    "axes.middleware.AxesMiddleware",
    # Turns a password-reset rate limit into its page (RATELIMIT_VIEW).
    "django_ratelimit.middleware.RatelimitMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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

# --- PostgreSQL ---------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if not DATABASE_URL:
    raise ImproperlyConfigured(
        "Set DATABASE_URL (postgres://user@host:5432/name), or start the portal through "
        "`make demo` / `python -m portal.embedded run -- …`, which provides a private one."
    )
# Persistent connections (a minute), checked before each request reuses one: a connection
# PostgreSQL dropped (a restart, a failover) is replaced, not answered 500. The ID-sync
# endpoint, outside Django's request cycle, checks its own (partners/idsync/endpoint.py).
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
}
# Inbound batches stage millions of rows in temporary tables: let them live in memory.
# (temp_buffers can only be set before a session's first temporary table, hence here.)
# A session whose client is gone (a worker killed, its network cut) is ended by PostgreSQL
# within DATABASE_CLIENT_CHECK_SECONDS even while it waits or computes, so the locks it holds
# (a data source's batch, a destination's run) do not outlive it. (PostgreSQL 14 and later.)
DATABASE_CLIENT_CHECK_SECONDS = int(os.environ.get("DATABASE_CLIENT_CHECK_SECONDS", "5"))
DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
    f"-c temp_buffers=256MB -c client_connection_check_interval={DATABASE_CLIENT_CHECK_SECONDS}s"
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and RQ ---------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if not REDIS_URL:
    raise ImproperlyConfigured("Set REDIS_URL (redis://host:6379/0).")

# One queue per kind of work so each can get its own workers (README "Production").
RQ_QUEUE_NAMES = ("inbound", "notify", "outbound", "default")
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": int(os.environ.get("RQ_DEFAULT_TIMEOUT", "3600"))}
    for name in RQ_QUEUE_NAMES
}
# The shared cache (rate limits): the same Redis.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "s2s",
    }
}
RQ = {"COMMIT_MODE": "on_db_commit", "WORKER_CLASS": "portal.rq_worker.OutageTolerantWorker"}
# Inbound batches: seconds a batch may take, and RQ's retries after a failure or a crash.
INBOUND_JOB_TIMEOUT = int(os.environ.get("INBOUND_JOB_TIMEOUT", "14400"))
# Batches of at least this many bytes (as delivered) are parsed by several processes.
INBOUND_PARSE_PROCESSES = int(os.environ.get("INBOUND_PARSE_PROCESSES", str(os.cpu_count() or 1)))
INBOUND_PARALLEL_MIN_BYTES = int(os.environ.get("INBOUND_PARALLEL_MIN_BYTES", str(1024 * 1024)))
# Split batches of at least this many bytes get a job per part, so several workers parse
# them at once (the batch is still applied as one transaction, once they are done).
INBOUND_PART_JOBS_MIN_BYTES = int(
    os.environ.get("INBOUND_PART_JOBS_MIN_BYTES", str(256 * 1024 * 1024))
)
INBOUND_RETRY_MAX = int(os.environ.get("INBOUND_RETRY_MAX", "3"))
INBOUND_RETRY_INTERVALS = [
    int(s) for s in os.environ.get("INBOUND_RETRY_INTERVALS", "10,60,300").split(",")
]
# Each partner's batches take turns (partners/inbound/queueing.py): at most this many of a
# partner are queued for the workers at once (never two of one data source), so one
# partner's backlog never holds another partner's file.
INBOUND_BATCHES_PER_PARTNER = int(os.environ.get("INBOUND_BATCHES_PER_PARTNER", "1"))
# A batch whose data source is busy with another batch (a race, or two partners sending to
# one shared data source) is tried again after these seconds.
INBOUND_TURN_RETRY_INTERVALS = [
    int(s) for s in os.environ.get("INBOUND_TURN_RETRY_INTERVALS", "5,10,30").split(",")
]
# A job (batch, receipt e-mail, export) that finds the database down is tried again after
# these seconds, the last repeated until the database is back: an outage uses up none of
# the job's own retries (partners/outages.py).
DATABASE_OUTAGE_RETRY_INTERVALS = [
    int(s) for s in os.environ.get("DATABASE_OUTAGE_RETRY_INTERVALS", "5,15,30,60").split(",")
]
# A file read far out of proportion to what it could apply stops its batch (nothing applied,
# a receipt says why): once INBOUND_PROPORTION_MIN_LINES lines are read (blank ones count),
# at least 1 in every INBOUND_PROPORTION_LINES must be able to apply something; once
# INBOUND_PROPORTION_MIN_BYTES are read (stored or inflated, whichever is more), at least 1
# in every INBOUND_PROPORTION_BYTES bytes. 0 turns a rule off.
INBOUND_PROPORTION_MIN_LINES = int(os.environ.get("INBOUND_PROPORTION_MIN_LINES", "1000000"))
INBOUND_PROPORTION_LINES = int(os.environ.get("INBOUND_PROPORTION_LINES", "100"))
INBOUND_PROPORTION_MIN_BYTES = int(
    os.environ.get("INBOUND_PROPORTION_MIN_BYTES", str(64 * 1024**2))
)
INBOUND_PROPORTION_BYTES = int(os.environ.get("INBOUND_PROPORTION_BYTES", str(1024**2)))
# ... and a PGP file whose gpg works this long without decrypting a byte (waits for the
# file's own bytes aside) is refused (0: never).
INBOUND_PGP_IDLE_SECONDS = float(os.environ.get("INBOUND_PGP_IDLE_SECONDS", "30"))
# Split files (SPEC §3.6): a batch of parts is processed once no part arrived for SETTLE
# seconds and none is missing, or, missing parts or not, after MAX_WAIT seconds.
INBOUND_PARTS_SETTLE_SECONDS = int(os.environ.get("INBOUND_PARTS_SETTLE_SECONDS", "300"))
INBOUND_PARTS_MAX_WAIT_SECONDS = int(os.environ.get("INBOUND_PARTS_MAX_WAIT_SECONDS", "21600"))
# The sweep (every INBOUND_SWEEP_SECONDS) queues again a batch queued or processing with no
# live job for longer than INBOUND_SWEEP_GRACE_SECONDS, and fails one RQ gave up on.
INBOUND_SWEEP_SECONDS = int(os.environ.get("INBOUND_SWEEP_SECONDS", "60"))
INBOUND_SWEEP_GRACE_SECONDS = int(os.environ.get("INBOUND_SWEEP_GRACE_SECONDS", "120"))
# Drop zones: how often they are polled (RQ cron), how long delivered files are kept.
INBOUND_POLL_SECONDS = int(os.environ.get("INBOUND_POLL_SECONDS", "300"))
# Each channel is polled by a job of its own; RQ stops one that takes longer than this (a
# drop zone that hangs), and the channel is polled again by the next round.
INBOUND_POLL_JOB_TIMEOUT = int(os.environ.get("INBOUND_POLL_JOB_TIMEOUT", "900"))
# Drop zones (and exports to them): seconds to reach the server (TCP, then SSH's banner, key
# exchange, authentication and the SFTP session, each), then to wait for any one answer (an
# SFTP request; an S3 response's bytes). A server that stalls fails the poll with the reason.
DROPZONE_CONNECT_TIMEOUT = float(os.environ.get("DROPZONE_CONNECT_TIMEOUT", "30"))
DROPZONE_READ_TIMEOUT = float(os.environ.get("DROPZONE_READ_TIMEOUT", "60"))
INBOUND_RETENTION_DAYS = int(os.environ.get("INBOUND_RETENTION_DAYS", "30"))
OUTBOUND_RETENTION_DAYS = int(os.environ.get("OUTBOUND_RETENTION_DAYS", "8"))
# A destination whose daily run failed is tried again after OUTBOUND_RETRY_SECONDS, then
# twice as long after each further failure, at most OUTBOUND_RETRY_MAX_SECONDS apart.
OUTBOUND_RETRY_SECONDS = int(os.environ.get("OUTBOUND_RETRY_SECONDS", "300"))
OUTBOUND_RETRY_MAX_SECONDS = int(os.environ.get("OUTBOUND_RETRY_MAX_SECONDS", "3600"))
# The membership change log (iter exports, the 14-day trend) keeps this many days; an iter
# destination whose last success is older gets a full export instead.
SEGMENT_CHANGES_RETENTION_DAYS = max(
    15, int(os.environ.get("SEGMENT_CHANGES_RETENTION_DAYS", "30"))
)
# SFTP drop zones: known host keys (new hosts are trusted on first use and remembered).
SFTP_KNOWN_HOST_FILE = os.environ.get("SFTP_KNOWN_HOST_FILE") or None
# GnuPG home holding the platform's private key, for .pgp / .gpg inbound files.
PGP_GNUPG_HOME = os.environ.get("PGP_GNUPG_HOME", "")

# --- Auth, i18n ----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "portal:login"  # the admin has its own login page
# Guessing is slow (django-axes, every web login: the portal's and the admin's): after
# LOGIN_FAILURE_LIMIT failed logins for one username from one client address, logins to
# that username from that address are refused for LOGIN_COOLOFF_MINUTES; the owner at
# their own address still logs in. One address failing LOGIN_ADDRESS_FAILURE_LIMIT times,
# whatever the usernames, has its logins refused too (0: no such limit). Counted in the
# database, across processes.
AUTHENTICATION_BACKENDS = [
    "portal.auth.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "10"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # the pair, never the username alone
LOGIN_ADDRESS_FAILURE_LIMIT = int(os.environ.get("LOGIN_ADDRESS_FAILURE_LIMIT", "100"))
# ... except for a username that logged in from that address within this many days (its
# owner, behind the same office NAT as whoever fails there; 0: none is): only its own
# pair's limit applies. Read from django-axes' log of successful logins (AccessLog).
LOGIN_KNOWN_ADDRESS_DAYS = int(os.environ.get("LOGIN_KNOWN_ADDRESS_DAYS", "30"))
# django-axes' records of past logins are pruned by the retention purge after this many days.
LOGIN_RECORDS_RETENTION_DAYS = int(os.environ.get("LOGIN_RECORDS_RETENTION_DAYS", "90"))
AXES_HANDLER = "portal.auth.LoginAttemptsHandler"  # adds the per-address limit
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "portal.auth.lockout_response"
AXES_CLIENT_IP_CALLABLE = "portal.auth.client_address"
AXES_USERNAME_CALLABLE = "portal.auth.attempt_username"
AXES_VERBOSE = False
# The client's address: the peer's, or, when the peer is one of these proxies, the address
# the proxy puts in X-Real-IP (README "Production": the proxy block). The same variable
# tells gunicorn which peers may send X-Forwarded-Proto; addresses or networks, "*" for
# any peer (only when nothing but the proxy can reach gunicorn).
TRUSTED_PROXIES = env_list("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
for _proxy in TRUSTED_PROXIES:
    if _proxy != "*":
        try:
            ipaddress.ip_network(_proxy, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"FORWARDED_ALLOW_IPS: {_proxy!r} is neither an address, a network nor *."
            ) from None
# Password reset requests: at most PASSWORD_RESET_RATE per pair (address typed, client
# address), and PASSWORD_RESET_ADDRESS_RATE per client address whatever is typed
# (django-ratelimit, counted in the shared cache below).
PASSWORD_RESET_RATE = os.environ.get("PASSWORD_RESET_RATE", "5/h")
PASSWORD_RESET_ADDRESS_RATE = os.environ.get("PASSWORD_RESET_ADDRESS_RATE", "50/h")
RATELIMIT_VIEW = "partners.portal.views.rate_limited_view"
RATELIMIT_IP_META_KEY = "portal.auth.client_address"
RATELIMIT_FAIL_OPEN = True  # Redis down must not stop a partner from resetting a password
LOGIN_REDIRECT_URL = "portal:home"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Files -----------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / ".local" / "media"))
MEDIA_URL = "media/"

# FILE_STORAGE=local (default) keeps uploads and drop zones under MEDIA_ROOT;
# FILE_STORAGE=s3 uses django-storages' S3 backend with the AWS_* variables below.
FILE_STORAGE = os.environ.get("FILE_STORAGE", "local")
if FILE_STORAGE == "s3":
    _default_storage: dict[str, object] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ.get("AWS_STORAGE_BUCKET_NAME", ""),
            "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            "location": os.environ.get("AWS_LOCATION", ""),
            "file_overwrite": False,
        },
    }
elif FILE_STORAGE == "local":
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
else:
    raise ImproperlyConfigured(f"FILE_STORAGE must be 'local' or 's3', not {FILE_STORAGE!r}.")
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# --- E-mail ----------------------------------------------------------------------------------
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL")
EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", "30"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "s2s-portal@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# The internal partner-solutions team: gets every receipt and every alert.
PARTNER_SOLUTIONS_EMAILS = env_list("PARTNER_SOLUTIONS_EMAILS", "partner-solutions@localhost")
# Links in e-mails point here (the portal as partners and staff reach it).
PORTAL_BASE_URL = os.environ.get("PORTAL_BASE_URL", "http://localhost:8000").rstrip("/")
# The error workbook is attached up to this size; bigger, the e-mail links to it.
RECEIPT_ATTACHMENT_MAX_BYTES = int(os.environ.get("RECEIPT_ATTACHMENT_MAX_BYTES", str(5 * 1024**2)))
# Alerts to the partner-solutions list: a trait batch with more than this share of failed
# records, and (`manage.py alerts_check`, daily) data sources silent for this many days.
ALERT_FAILED_SHARE = float(os.environ.get("ALERT_FAILED_SHARE", "0.2"))
ALERT_SILENT_DAYS = int(os.environ.get("ALERT_SILENT_DAYS", "3"))
# Receipt e-mails: RQ's retries of a failed send (SMTP down, refused, ...).
NOTIFY_RETRY_MAX = int(os.environ.get("NOTIFY_RETRY_MAX", "5"))
NOTIFY_RETRY_INTERVALS = [
    int(s) for s in os.environ.get("NOTIFY_RETRY_INTERVALS", "30,120,600,1800,3600").split(",")
]
# The receipt sweep (every NOTIFY_SWEEP_SECONDS): a delivery still pending once RQ's retries
# would all be over (their intervals, plus NOTIFY_SWEEP_MARGIN_SECONDS for the sends) and with
# no live job is queued again, at most NOTIFY_SWEEP_MAX_REQUEUES times and while younger than
# NOTIFY_SWEEP_MAX_AGE_SECONDS (a day: older, a receipt is news to nobody), then failed.
NOTIFY_SWEEP_SECONDS = int(os.environ.get("NOTIFY_SWEEP_SECONDS", "600"))
NOTIFY_SWEEP_MARGIN_SECONDS = int(os.environ.get("NOTIFY_SWEEP_MARGIN_SECONDS", "900"))
NOTIFY_SWEEP_MAX_REQUEUES = int(os.environ.get("NOTIFY_SWEEP_MAX_REQUEUES", "3"))
NOTIFY_SWEEP_MAX_AGE_SECONDS = int(os.environ.get("NOTIFY_SWEEP_MAX_AGE_SECONDS", "86400"))

# --- Partner portal ---------------------------------------------------------------------------
# Uploads past this size are stopped while they arrive.
PORTAL_UPLOAD_MAX_BYTES = int(os.environ.get("PORTAL_UPLOAD_MAX_BYTES", str(5 * 1024**3)))
# "Check only" reads this many lines of the file.
PORTAL_DRY_RUN_LINES = int(os.environ.get("PORTAL_DRY_RUN_LINES", "10000"))
# ... and stops after this many bytes or seconds, whichever comes first: it runs inside a
# web request, and a small gzip may inflate to gigabytes of blank lines (or be millions of
# members inflating to nothing). Bytes: the plain bytes, and a compressed file's own bytes.
PORTAL_DRY_RUN_MAX_BYTES = int(os.environ.get("PORTAL_DRY_RUN_MAX_BYTES", str(64 * 1024**2)))
PORTAL_DRY_RUN_SECONDS = float(os.environ.get("PORTAL_DRY_RUN_SECONDS", "10"))

# --- Taxonomy workbook (partners/taxonomy/limits.py) ------------------------------------------
# A workbook past any of these is refused at once, with the reason (far above any real one).
TAXONOMY_MAX_ROWS = int(os.environ.get("TAXONOMY_MAX_ROWS", "100000"))
TAXONOMY_MAX_BYTES = int(os.environ.get("TAXONOMY_MAX_BYTES", str(50 * 1024**2)))
# What its zip declares it unpacks to (a zip bomb is refused unopened).
TAXONOMY_MAX_UNCOMPRESSED_BYTES = int(
    os.environ.get("TAXONOMY_MAX_UNCOMPRESSED_BYTES", str(200 * 1024**2))
)
# Problems listed when an import is refused; the others are counted.
TAXONOMY_ERRORS_SHOWN = int(os.environ.get("TAXONOMY_ERRORS_SHOWN", "200"))

# --- HTTP ID sync (/ibs:) --------------------------------------------------------------------
IDSYNC_COOKIE_NAME = os.environ.get("IDSYNC_COOKIE_NAME", "dd_uuid")
IDSYNC_COOKIE_DOMAIN = os.environ.get("IDSYNC_COOKIE_DOMAIN") or None
IDSYNC_COOKIE_MAX_AGE = int(os.environ.get("IDSYNC_COOKIE_MAX_AGE", str(2 * 365 * 86400)))
# How long a worker trusts what it read of a data source (active, redirect hosts).
IDSYNC_SOURCE_CACHE_SECONDS = int(os.environ.get("IDSYNC_SOURCE_CACHE_SECONDS", "30"))
IDSYNC_MAPPING_TTL_DAYS = int(os.environ.get("IDSYNC_MAPPING_TTL_DAYS", "120"))
# New profiles and new mappings (and a visitor's opt-outs) written per client address (an
# IPv6 address counts by its /64) and per data source, in fixed windows, counted in Redis
# (README "HTTP ID sync"): past either, a call answers as usual but writes nothing.
IDSYNC_NEW_PER_ADDRESS = env_rate("IDSYNC_NEW_PER_ADDRESS", "600/10m")
IDSYNC_NEW_PER_DPID = env_rate("IDSYNC_NEW_PER_DPID", "200000/10m")
# How long an ID-sync call's write may wait for a row another transaction holds (a batch
# writing the same profile or mapping) before it is given up: the call answers as usual and
# writes nothing (README "HTTP ID sync").
IDSYNC_LOCK_TIMEOUT_MS = int(os.environ.get("IDSYNC_LOCK_TIMEOUT_MS", "20"))
# Cookies issued before they were signed hold the bare UUID: one is still taken (and issued
# again, signed) when its profile exists and was made before this time; set it to the time
# of the upgrade that first signed them. Unset: the time migration
# partners/0027_idsync_signed_cookies was applied. Once IDSYNC_COOKIE_MAX_AGE has passed
# since it, no plain cookie is taken (every one has expired).
IDSYNC_PLAIN_COOKIES_BEFORE = env_datetime("IDSYNC_PLAIN_COOKIES_BEFORE")

# --- Security behind a proxy ------------------------------------------------------------------
if env_bool("SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# HTTPS only, once the site is served over TLS (README "Production" sets these; `manage.py
# check --deploy` is clean with them). The load balancer's /healthz may stay plain HTTP.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS")
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD")

# Content-Security-Policy (django-csp): only this site's own scripts, and the inline ones
# holding this response's nonce; nothing may frame the pages. Every page, the django-rq
# dashboard's included: its one inline script, without a nonce, is refused, and loses
# nothing (it calls the jQuery plugin Django's admin dropped in 4.1, so it only ever threw;
# the admin's actions.js sets the dashboard's checkboxes up by itself).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, "'unsafe-inline'"],  # style attributes (the admin has many)
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    # django-axes tells of every successful login at INFO; its lockouts are warnings.
    "loggers": {"axes": {"level": "WARNING"}},
}
