"""Security settings as production runs them: `check --deploy` and the response headers."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.test import Client

from tests.partners.inbound.test_jobs import worker_environment

BASE_DIR = Path(__file__).resolve().parents[1]

# The production variables of the README ("Production": environment).
PRODUCTION = {
    "DEBUG": "0",
    "ALLOWED_HOSTS": "portal.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://portal.example.com",
    "SECURE_PROXY_SSL_HEADER": "1",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}


def test_check_deploy_is_clean_with_the_production_variables(db: Any) -> None:
    env = {**worker_environment(), **PRODUCTION, "SECRET_KEY": secrets.token_urlsafe(50)}
    result = subprocess.run(
        [
            sys.executable,
            str(BASE_DIR / "manage.py"),
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_pages_send_a_content_security_policy_whose_nonce_their_scripts_hold(
    admin_client: Client,
) -> None:
    from tests.partners.inbound.conftest import World
    from tests.partners.portal.test_pages import _login

    world = World()
    for client, path in [
        (_login(world.partner, "acme"), "/portal/upload/"),
        (_login(world.partner, "acme2"), "/portal/files/"),
        (admin_client, "/admin/tools/onboarding-report/"),
        (Client(), "/portal/login/"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        policy = response["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        nonce = re.search(r"'nonce-([^']+)'", policy)
        # Inline scripts (not data: json_script's application/json is never run).
        tags = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", response.content.decode())
        scripts = [tag for tag in tags if "application/json" not in tag]
        if scripts or path != "/portal/login/":
            assert nonce, policy
            assert scripts, path
            assert all(f'nonce="{nonce[1]}"' in tag for tag in scripts), (path, scripts)
        else:  # no inline script: no nonce either, only this site's own scripts run
            assert re.search(r"script-src 'self'(;|$)", policy), policy


def _dashboard_data() -> None:
    """Something on every page of the RQ dashboard: queued, finished (with a result),
    failed, scheduled and deferred jobs, a worker and a cron scheduler."""
    from datetime import timedelta

    import django_rq
    from django_rq.cron import DjangoCronScheduler
    from rq import SimpleWorker, Worker

    queue = django_rq.get_queue("default")
    queue.enqueue(len, "done")
    queue.enqueue("math.sqrt", -1)  # fails: math domain error
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    waiting = queue.enqueue(len, "queued")
    queue.enqueue(len, "deferred", depends_on=waiting)
    queue.enqueue_in(timedelta(hours=1), len, "scheduled")
    Worker([queue], connection=queue.connection, name="dashboard-test").register_birth()
    scheduler = DjangoCronScheduler(connection=queue.connection, name="dashboard-cron")
    scheduler.register(len, queue_name="default", args=("cron",), interval=3600)
    scheduler.register_birth()


def test_every_rq_dashboard_page_sends_the_content_security_policy(
    admin_client: Client, private_redis: Any
) -> None:
    """Before: the dashboard (/admin/django_rq/…) was left out of the policy. Every page a
    staff member reaches from it, following its links, sends the policy every page sends."""
    _dashboard_data()
    admin_policy = admin_client.get("/admin/")["Content-Security-Policy"]
    expected = re.sub(r"'nonce-[^']+' ?", "", admin_policy)
    assert "default-src 'self'" in expected
    seen: dict[str, int] = {}
    todo = ["/admin/django_rq/dashboard/"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        response = admin_client.get(path)
        seen[path] = response.status_code
        assert response.status_code == 200, (path, response.status_code)
        policy = response.get("Content-Security-Policy")
        assert policy is not None, f"{path} has no Content-Security-Policy"
        assert re.sub(r"'nonce-[^']+' ?", "", policy) == expected, path
        for link in re.findall(r'href="(/admin/django_rq/[^"#]*)"', response.content.decode()):
            todo.append(link.replace("&amp;", "&"))
    pages = {re.sub(r"/[0-9a-f-]{36}/", "/<job>/", path) for path in seen}
    # The crawl reached the dashboard's pages: queues, registries, jobs, workers, cron.
    for part in ("/queues/", "/failed/", "/finished/", "/scheduled/", "/deferred/", "/workers/"):
        assert any(part in page for page in pages), (part, sorted(pages))
    assert any("/<job>/" in page for page in pages), sorted(pages)
    assert any("cron-schedulers" in page for page in pages), sorted(pages)


def test_the_rq_dashboards_checkboxes_work_under_the_policy(
    browser: Any, live_server: Any, admin_user: Any, private_redis: Any
) -> None:
    """In Chromium: the policy refuses the dashboard's one inline script (no nonce), which
    loses nothing: it called a jQuery plugin Django's admin no longer has (it only threw);
    the admin's own actions.js makes the "select all" box work."""
    import django_rq
    from django_rq.settings import get_queues_map
    from rq import SimpleWorker

    queue = django_rq.get_queue("default")
    for _ in range(2):
        queue.enqueue("math.sqrt", -1)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    index = get_queues_map()["default"]
    response = page.goto(f"{live_server.url}/admin/django_rq/dashboard/queues/{index}/failed/")
    assert response.status == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert page.locator("tr input.action-select").count() == 2
    page.click("#action-toggle")
    assert page.locator("tr input.action-select:checked").count() == 2
    assert page.locator("#result_list tbody tr.selected").count() == 2  # actions.js marks them
    context.close()
    refused = [m for m in messages if "Content Security Policy" in m]
    assert len(refused) == 1, messages
    assert "inline script" in refused[0], refused
    # The script did not run, so it did not throw (without the policy: "$(...).actions is not
    # a function"). What is left is actions.js looking for a selection counter the
    # dashboard's template lacks, on each click: the same without the policy.
    assert all("reading 'dataset'" in error for error in errors), errors
