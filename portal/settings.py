"""Settings, read from the environment (see README "Configuration" and .env.example)."""

from __future__ import annotations

import os
from datetime import timedelta
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


DEBUG = env_bool("DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set SECRET_KEY (or DEBUG=1 for a local run).")
    SECRET_KEY = "insecure-local-development-key"
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
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
# Inbound batches stage millions of rows in temporary tables: let them live in memory.
# (temp_buffers can only be set before a session's first temporary table, hence here.)
DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c temp_buffers=256MB"
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
# LOGIN_FAILURE_LIMIT failed logins for one username, or from one address, further logins
# are refused for LOGIN_COOLOFF_MINUTES (counted in the database: across processes).
AUTHENTICATION_BACKENDS = [
    "portal.auth.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "10"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("LOGIN_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one locks
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "portal.auth.lockout_response"
AXES_CLIENT_IP_CALLABLE = "portal.auth.client_address"
AXES_VERBOSE = False
# Password reset requests: at most PASSWORD_RESET_RATE per address typed and per client
# address (django-ratelimit, counted in the shared cache below).
PASSWORD_RESET_RATE = os.environ.get("PASSWORD_RESET_RATE", "5/h")
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
# ... and stops after this many plain (inflated) bytes or seconds, whichever comes first: it
# runs inside a web request, and a small gzip may inflate to gigabytes of blank lines.
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
# holding this response's nonce; nothing may frame the pages. The django-rq dashboard
# (staff only, third-party templates with inline scripts) goes without.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/admin/django_rq/"],
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
