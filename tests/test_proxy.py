"""Login throttling behind the README's reverse proxy: a real nginx, configured with the
README's own proxy block, in front of a real gunicorn of the portal pool, on loopback.

Clients connect from different loopback addresses (all of 127.0.0.0/8 is local on Linux),
so nginx sees a different ``$remote_addr`` for each, as it would for clients on the Internet.
nginx itself reaches gunicorn from 127.0.0.1, the proxy ``FORWARDED_ALLOW_IPS`` names by
default; a client that connects to gunicorn directly comes from another address."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.management import call_command

from partners.models import InboundFile
from partners.portal.api import api_token_rotate
from tests.conftest import port_wait
from tests.factories import PartnerFactory, PartnerUserFactory, UserFactory
from tests.partners.inbound.conftest import World
from tests.test_production_web import Gunicorn, _environment, _free_port

BASE_DIR = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
PASSWORD = "the-staff-password-42"

# The stock http block includes the types of file names (Debian: /etc/nginx/mime.types).
MIME_TYPES = Path("/etc/nginx/mime.types")
# STATIC_ROOT as .env.example sets it, where the README's block serves /static/ from.
README_STATIC_ROOT = "/var/lib/s2s-portal/static/"

STRANGER, OWNER, ROTATOR, DIRECT = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = _ipv6_loopback()

pytestmark = pytest.mark.django_db(transaction=True)


def readme_proxy_block() -> str:
    """The nginx block of the README's Production section, as an operator copies it."""
    readme = (BASE_DIR / "README.md").read_text()
    (block,) = re.findall(r"```nginx\n(.*?)```", readme, flags=re.S)
    return block


class Nginx:
    """nginx in the foreground with its own prefix, configuration, pid file and temporary
    folders (none of the system's), the README's block in its server."""

    def __init__(self, folder: Path, portal_port: int, idsync_port: int, static_root: Path) -> None:
        assert NGINX is not None
        self.port = _free_port()
        block = readme_proxy_block()
        assert "127.0.0.1:8000" in block, block
        assert "127.0.0.1:8001" in block, block
        assert README_STATIC_ROOT in block, block
        block = block.replace("127.0.0.1:8000", f"127.0.0.1:{portal_port}")
        block = block.replace("127.0.0.1:8001", f"127.0.0.1:{idsync_port}")
        block = block.replace(README_STATIC_ROOT, f"{static_root}/")
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        # As root the workers would switch to "nobody", who cannot use these folders.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (folder / "nginx.conf").write_text(
            f"""{user}daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 64; }}
http {{
    {f"include {MIME_TYPES};" if MIME_TYPES.exists() else ""}
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        {f"listen [::1]:{self.port};" if IPV6 else ""}
        server_name _;
{block}
    }}
}}
"""
        )
        self.folder = folder
        self.static_root = static_root
        self.process = subprocess.Popen(
            [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port_wait(self.process, self.port, "nginx", 15)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


class Browser:
    """A client at one source address: its cookies, the CSRF token of the forms it got."""

    def __init__(
        self,
        port: int,
        source: str,
        headers: dict[str, str] | None = None,
        raw_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.port, self.source = port, source
        self.headers = headers or {}
        self.raw_headers = raw_headers or []  # sent as they are: repeated, in any case
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, dict[str, str]]:
        host = "::1" if ":" in self.source else "127.0.0.1"
        conn = http.client.HTTPConnection(
            host, self.port, timeout=30, source_address=(self.source, 0)
        )
        sent = {**self.headers, **(headers or {})}
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = b""
        if form is not None:
            body = urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
            sent["Content-Length"] = str(len(body))
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", f"127.0.0.1:{self.port}")  # ALLOWED_HOSTS, from ::1 too
        for name, value in [*sent.items(), *self.raw_headers]:
            conn.putheader(name, value)
        conn.endheaders(body or None)
        response = conn.getresponse()
        page = response.read().decode(errors="replace")
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        conn.close()
        return response.status, page, dict(response.getheaders())

    def post_form(
        self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, str, dict[str, str]]:
        """GET the page for its CSRF token, then POST the form (as a browser does)."""
        status, page, _ = self.request("GET", path, headers=headers)
        assert status == 200, (status, page[:500])
        (token,) = re.findall(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[:1]
        return self.request("POST", path, {**form, "csrfmiddlewaretoken": token}, headers)

    def log_in(self, username: str, password: str, **headers: str) -> int:
        status, _, _ = self.post_form(
            "/admin/login/?next=/admin/",
            {"username": username, "password": password, "next": "/admin/"},
            headers,
        )
        return status


class Mailbox:
    """A real SMTP server (aiosmtpd) on loopback: the recipients of what it accepted."""

    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd calls it so)
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller

    box = Mailbox()
    smtp = Controller(box, hostname="127.0.0.1", port=_free_port())
    smtp.start()
    yield box, smtp.port
    smtp.stop()


@pytest.fixture
def proxied(
    request: Any, settings: Any, tmp_path: Path, mailbox: tuple[Mailbox, int]
) -> Iterator[tuple[Nginx, Gunicorn]]:
    """nginx (the README's block) in front of the portal pool and the ID-sync pool; more
    environment for them by indirect parametrization."""
    if NGINX is None:
        pytest.skip("no nginx on this machine (apt-get install nginx-light; .ci/run does)")
    env = _environment(
        settings,
        MEDIA_ROOT=str(tmp_path / "media"),
        WEB_WORKERS="1",
        WEB_THREADS="4",
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(mailbox[1]),
        PASSWORD_RESET_RATE="5/h",
        **getattr(request, "param", {}),
    )
    portal = Gunicorn("portal.wsgi", env)
    idsync = Gunicorn("portal.wsgi:idsync_application", {**env, "WEB_POOL": "idsync"})
    static_root = tmp_path / "static"
    static_root.mkdir()
    nginx = Nginx(tmp_path / "nginx", portal.port, idsync.port, static_root)
    yield nginx, portal
    nginx.stop()
    portal.stop()
    idsync.stop()


@pytest.fixture
def staff(db: Any) -> User:
    user = UserFactory.create(username="staff", email="staff@platform.test", is_staff=True)
    user.is_superuser = True
    user.set_password(PASSWORD)
    user.save()
    return user


def _attempts() -> dict[tuple[str, str], int]:
    return {
        (a.username, a.ip_address): a.failures_since_start
        for a in AccessAttempt.objects.order_by("ip_address")
    }


def test_a_stranger_failing_on_the_staff_account_does_not_lock_out_its_owner(
    proxied: tuple[Nginx, Gunicorn], staff: User
) -> None:
    """Before: ten failures from anywhere locked the account for everyone, and behind the
    proxy every client had the proxy's address (or the one it forged)."""
    nginx, _ = proxied
    stranger = Browser(nginx.port, STRANGER)
    statuses = [stranger.log_in("staff", f"guess-{n}") for n in range(12)]
    assert statuses[:9] == [200] * 9  # the form again, "wrong password"
    assert set(statuses[9:]) == {429}  # the pair (staff, stranger's address) is locked
    assert stranger.log_in("staff", PASSWORD) == 429  # even with the right password
    # The owner, at their usual address, logs in.
    owner = Browser(nginx.port, OWNER)
    assert owner.log_in("staff", PASSWORD) == 302
    assert owner.request("GET", "/admin/")[0] == 200
    assert _attempts() == {("staff", STRANGER): 13}


def test_forged_address_headers_through_the_proxy_are_replaced_by_the_proxy(
    proxied: tuple[Nginx, Gunicorn], staff: User
) -> None:
    """A client rotating forged X-Forwarded-For, X-Real-IP and Forwarded headers is counted
    by the address nginx saw, so it is throttled like any other."""
    nginx, _ = proxied
    rotator = Browser(nginx.port, ROTATOR)
    statuses = []
    for n in range(12):
        forged = f"203.0.{n}.{n + 1}"
        statuses.append(
            rotator.log_in(
                "staff",
                f"guess-{n}",
                **{
                    "X-Forwarded-For": f"{forged}, 198.51.100.{n}",
                    "X-Real-IP": forged,
                    "Forwarded": f"for={forged}",
                    "X-Client-IP": forged,
                },
            )
        )
    assert statuses[9:] == [429] * 3
    assert _attempts() == {("staff", ROTATOR): 12}
    assert Browser(nginx.port, OWNER).log_in("staff", PASSWORD) == 302


def test_repeated_and_oddly_spelled_address_headers_are_replaced_or_dropped(
    proxied: tuple[Nginx, Gunicorn], staff: User
) -> None:
    """The header nginx sets, sent by the client too: repeated, in other cases, with
    underscores (which nginx and gunicorn drop), beside the other headers naming a client."""
    nginx, _ = proxied
    forger = Browser(
        nginx.port,
        ROTATOR,
        raw_headers=[
            ("X-Real-IP", OWNER),
            ("x-real-ip", OWNER),
            ("X-REAL-IP", "::1"),
            ("X_Real_IP", OWNER),
            ("X-Forwarded-For", f"{OWNER}, {OWNER}"),
            ("Forwarded", 'for="[::1]";proto=https, for=127.0.0.3'),
            ("True-Client-IP", OWNER),
        ],
    )
    statuses = [forger.log_in("staff", f"guess-{n}") for n in range(11)]
    assert statuses[9:] == [429, 429]
    assert _attempts() == {("staff", ROTATOR): 11}
    assert Browser(nginx.port, OWNER).log_in("staff", PASSWORD) == 302


def test_a_client_reaching_gunicorn_directly_is_counted_by_its_own_address(
    proxied: tuple[Nginx, Gunicorn], staff: User
) -> None:
    """Only the proxy named by FORWARDED_ALLOW_IPS may say who the client is: a client at
    another address that connects to gunicorn itself and claims to be the owner (X-Real-IP,
    X-Forwarded-For) is counted as itself, and the owner is not locked out."""
    nginx, portal = proxied
    direct = Browser(portal.port, DIRECT, {"X-Real-IP": OWNER, "X-Forwarded-For": OWNER})
    statuses = [direct.log_in("staff", f"guess-{n}") for n in range(11)]
    assert statuses[9:] == [429, 429]
    assert _attempts() == {("staff", DIRECT): 11}
    assert Browser(nginx.port, OWNER).log_in("staff", PASSWORD) == 302


@pytest.mark.parametrize("proxied", [{"LOGIN_ADDRESS_FAILURE_LIMIT": "12"}], indirect=True)
def test_a_stranger_flooding_the_office_address_does_not_lock_out_its_users(
    proxied: tuple[Nginx, Gunicorn], staff: User
) -> None:
    """Before: LOGIN_ADDRESS_FAILURE_LIMIT failures from one address refused every login from
    it, so a stranger behind the office's NAT address (here: the same source address)
    trying many usernames locked out everyone there. A username that logged in from there
    lately still does; one new to that address is paused."""
    nginx, _ = proxied
    newcomer = UserFactory.create(username="newcomer", is_staff=True)
    newcomer.set_password(PASSWORD)
    newcomer.save()
    assert Browser(nginx.port, OWNER).log_in("staff", PASSWORD) == 302  # the usual place
    stranger = Browser(nginx.port, OWNER)
    statuses = [stranger.log_in(f"user{n}", "guess") for n in range(14)]
    assert statuses[:11] == [200] * 11
    assert set(statuses[12:]) == {429}
    assert Browser(nginx.port, OWNER).log_in("staff", PASSWORD) == 302
    assert Browser(nginx.port, OWNER).log_in("newcomer", PASSWORD) == 429
    assert Browser(nginx.port, STRANGER).log_in("newcomer", PASSWORD) == 302  # elsewhere


def _reset(browser: Browser, email: str) -> int:
    status, _, _ = browser.post_form("/portal/password-reset/", {"email": email})
    return status


def test_password_resets_are_limited_per_account_and_address(
    proxied: tuple[Nginx, Gunicorn], mailbox: tuple[Mailbox, int]
) -> None:
    """A stranger asking for the owner's resets uses up its own pair's requests, not the
    owner's: the owner, at their own address, still gets their link."""
    nginx, _ = proxied
    user = UserFactory.create(username="acme", email="acme@partner.test")
    PartnerUserFactory.create(user=user, partner=PartnerFactory.create())
    stranger = Browser(nginx.port, STRANGER)
    statuses = [
        _reset(stranger, email)
        for email in ["acme@partner.test", "ACME@Partner.Test", " acme@partner.test "] * 3
    ]
    assert statuses == [302] * 5 + [429] * 4
    assert _reset(Browser(nginx.port, OWNER), "acme@partner.test") == 302
    assert mailbox[0].recipients == ["acme@partner.test"] * 6


@pytest.mark.skipif(not IPV6, reason="no IPv6 loopback (::1) on this machine")
def test_an_ipv6_client_is_counted_by_its_own_address_too(
    proxied: tuple[Nginx, Gunicorn], staff: User
) -> None:
    """nginx passes an IPv6 client's address as it is; the app counts it as its /64 (here
    ``::`` for ``::1``), with forged headers ignored, and the owner is not affected."""
    nginx, _ = proxied
    client = Browser(nginx.port, "::1", {"X-Real-IP": OWNER, "X-Forwarded-For": OWNER})
    statuses = [client.log_in("staff", f"guess-{n}") for n in range(11)]
    assert statuses[9:] == [429, 429]
    assert _attempts() == {("staff", "::"): 11}
    assert Browser(nginx.port, OWNER).log_in("staff", PASSWORD) == 302


def test_the_admin_and_portal_css_and_js_load_through_the_proxy(
    proxied: tuple[Nginx, Gunicorn], settings: Any
) -> None:
    """Before: the README's block had no /static/ location and the app (DEBUG off) serves
    none, so every stylesheet and script of the admin and the portal answered 404."""
    nginx, _ = proxied
    settings.STATIC_ROOT = nginx.static_root
    call_command("collectstatic", interactive=False, verbosity=0)
    browser = Browser(nginx.port, OWNER)
    linked: list[str] = []
    for page_path in ("/portal/login/", "/admin/login/"):
        status, page, _ = browser.request("GET", page_path)
        assert status == 200
        linked += re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
    assert "/static/partners/portal.css" in linked
    assert "/static/admin/css/base.css" in linked
    assert "/static/partners/admin.css" in linked
    types = {".css": "text/css", ".js": "application/javascript", ".svg": "image/svg+xml"}
    for path in [*linked, "/static/admin/js/core.js", "/static/partners/onboarding_report.js"]:
        status, body, headers = browser.request("GET", path)
        assert status == 200, path
        expected = types[Path(path).suffix]
        assert headers["Content-Type"].split(";")[0] == expected, (path, headers)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert body == (nginx.static_root / path.removeprefix("/static/")).read_text()


def test_the_api_next_link_keeps_the_host_and_port_the_client_used(
    proxied: tuple[Nginx, Gunicorn],
) -> None:
    """Before: the block passed ``Host $host`` (no port), so behind a proxy on any port but
    the scheme's own the API's ``next`` link pointed at the wrong address."""
    nginx, _ = proxied
    world = World()
    token = api_token_rotate(partner=world.partner, by="test")
    for n in range(3):
        InboundFile.objects.create(
            partner=world.partner, name=f"ftp_dpm_21_170000000{n}.sync", path="x", size=1
        )
    api = Browser(nginx.port, OWNER, {"Authorization": f"Bearer {token}"})
    status, body, _ = api.request("GET", "/api/v1/files?limit=2")
    assert status == 200, body
    next_url = json.loads(body)["next"]
    assert next_url.startswith(f"http://127.0.0.1:{nginx.port}/api/v1/files?cursor="), next_url
    status, body, _ = api.request("GET", next_url.removeprefix(f"http://127.0.0.1:{nginx.port}"))
    assert (status, len(json.loads(body)["files"])) == (200, 1)
