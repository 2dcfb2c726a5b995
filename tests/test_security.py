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
