"""``/healthz``: whether this process can reach what it needs (PostgreSQL and Redis), for the
load balancer and the supervisor. 200 when both answer, 503 naming what does not."""

from __future__ import annotations

import django_rq
from django.db import connection
from django.http import HttpRequest, JsonResponse
from redis.exceptions import RedisError


def health_report() -> dict[str, str]:
    """``{"database": "ok" | <error>, "redis": "ok" | <error>}``."""
    report = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        report["database"] = "ok"
    except Exception as exc:  # any failure to reach it is the answer, not an error of ours
        connection.close_if_unusable_or_obsolete()
        report["database"] = f"unreachable: {type(exc).__name__}"
    try:
        django_rq.get_connection("default").ping()
        report["redis"] = "ok"
    except (RedisError, OSError) as exc:
        report["redis"] = f"unreachable: {type(exc).__name__}"
    return report


def healthy(report: dict[str, str]) -> bool:
    return all(value == "ok" for value in report.values())


def health_view(request: HttpRequest) -> JsonResponse:
    report = health_report()
    return JsonResponse(report, status=200 if healthy(report) else 503)
