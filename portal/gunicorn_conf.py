"""gunicorn's settings, one file for the README's production commands, the tests that start
gunicorn and ``bench/idsync.py``: ``gunicorn -c python:portal.gunicorn_conf <app>``.

Two pools of web processes from the same code (README "Production"), chosen by ``WEB_POOL``:

- ``portal`` (default; app ``portal.wsgi``): the admin, the partner portal and the API. Its
  requests include uploads of up to 5 GB at the partner's own speed and checks of a file, so
  it runs gunicorn's threaded worker: a thread per request, and the worker's ``timeout`` is a
  heartbeat of its main loop, not a limit on how long a request may take (a sync worker is
  killed, with its upload, after ``timeout`` seconds of one request).
- ``idsync`` (app ``portal.wsgi:idsync_application``): ``/ibs:``, ``/optout`` and
  ``/idsync/``, hit by browsers on every partner page view. Short requests only, in sync
  workers with a short timeout; no heavy request can land in these processes.

Every value comes from an environment variable (``WEB_WORKERS``, ``WEB_THREADS``,
``WEB_TIMEOUT``, ``WEB_GRACEFUL_TIMEOUT``, ``WEB_KEEPALIVE``); ``--bind`` is given on the
command line.
"""

from __future__ import annotations

import multiprocessing
import os

pool = os.environ.get("WEB_POOL", "portal")
if pool not in ("portal", "idsync"):
    raise SystemExit(f"WEB_POOL must be 'portal' or 'idsync', not {pool!r}")

cores = multiprocessing.cpu_count()
if pool == "portal":
    worker_class = "gthread"
    workers = int(os.environ.get("WEB_WORKERS", str(cores)))
    threads = int(os.environ.get("WEB_THREADS", "8"))
    timeout = int(os.environ.get("WEB_TIMEOUT", "120"))
else:
    worker_class = "sync"
    workers = int(os.environ.get("WEB_WORKERS", str(2 * cores)))
    timeout = int(os.environ.get("WEB_TIMEOUT", "10"))
graceful_timeout = int(os.environ.get("WEB_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("WEB_KEEPALIVE", "5"))
# The TLS proxy in front says who the client is and whether it came over HTTPS.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = "-" if os.environ.get("WEB_ACCESS_LOG", "") in ("1", "true", "yes") else None

# glibc's malloc gives each thread that allocates at the same time as another an arena of its
# own, and a big request (a taxonomy import of 100,000 rows) leaves such an arena fragmented:
# measured, a worker stayed 30 MB bigger after each of its first imports. Python allocates
# under its GIL, so the threads of a portal worker share the main arena at no real cost, and
# malloc_trim gives its free pages back (partners/taxonomy/limits.py). glibc's own
# MALLOC_ARENA_MAX, when set in the environment, wins.
M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def post_fork(server: object, worker: object) -> None:
    if pool == "portal" and "MALLOC_ARENA_MAX" not in os.environ:
        import contextlib
        import ctypes

        with contextlib.suppress(AttributeError, OSError):  # not glibc: nothing to do
            ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)
