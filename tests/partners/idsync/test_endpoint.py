"""The HTTP ID-sync endpoints, called as the WSGI application that serves them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from io import StringIO
from typing import Any
from urllib.parse import unquote_to_bytes
from wsgiref.util import setup_testing_defaults

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from partners.idsync.cookies import signed_value
from partners.idsync.endpoint import (
    PIXEL,
    _session_given_back,
    idsync_only,
    sources,
    with_idsync_endpoints,
)
from partners.models import DataSource, IDMapping, IDSyncOptOut
from segments.models import Profile
from tests.factories import DataSourceFactory, IDMappingFactory, PartnerFactory, ProfileFactory

pytestmark = pytest.mark.django_db


def _django(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"django"]


app = with_idsync_endpoints(_django)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def cookie(self) -> str | None:
        return self.headers.get("Set-Cookie")

    @property
    def uuid(self) -> str:
        """The UUID of the cookie issued (its value is ``<UUID>:<signature>``)."""
        assert self.cookie is not None
        value = self.cookie.split(";")[0].split("=", 1)[1]
        uuid = value.split(":")[0]
        assert value == signed_value(uuid)
        return uuid

    @property
    def error_codes(self) -> list[int]:
        return [e["code"] for e in json.loads(self.body)["errors"]]


def get(
    target: str,
    *,
    cookie: str | None = None,
    raw_cookie: str | None = None,
    https: bool = False,
    **environ_extra: str,
) -> Answer:
    """Call the application as gunicorn would: the raw target in RAW_URI. ``cookie``: the
    visitor's UUID, sent signed as the endpoint issues it; ``raw_cookie``: the Cookie header
    as given; ``environ_extra``: e.g. REMOTE_ADDR, HTTP_X_REAL_IP."""
    environ: dict[str, Any] = {"REMOTE_ADDR": "127.0.0.1"}
    setup_testing_defaults(environ)
    path, _, query = target.partition("?")
    environ.update(
        PATH_INFO=unquote_to_bytes(path).decode("latin-1"), QUERY_STRING=query, RAW_URI=target
    )
    if cookie:
        environ["HTTP_COOKIE"] = f"other=1; dd_uuid={signed_value(cookie)}"
    if raw_cookie is not None:
        environ["HTTP_COOKIE"] = raw_cookie
    environ.update(environ_extra)
    if https:
        environ["wsgi.url_scheme"] = "https"
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    body = b"".join(app(environ, start_response))
    return Answer(seen["status"], seen["headers"], body)


@pytest.fixture(autouse=True)
def world() -> dict[str, DataSource]:
    sources.clear()
    partner = PartnerFactory.create()
    return {
        "s21": DataSourceFactory.create(
            dpid=21,
            partner=partner,
            redirect_hosts=["partner.example", "*.cdn.example"],
            idsync_url_template="https://partner.example/sync?our_id=${DD_UUID}",
        ),
        "s22": DataSourceFactory.create(dpid=22, partner=partner),
        "off": DataSourceFactory.create(dpid=23, partner=partner, active=False),
    }


def _mappings() -> set[tuple[int, str, str]]:
    return set(IDMapping.objects.values_list("data_source_id", "dpuuid", "profile__uuid"))


def test_a_new_visitor_gets_a_cookie_a_pixel_and_a_mapping() -> None:
    answer = get("/ibs:dpid=21&dpuuid=abc")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "image/gif"
    assert answer.body == PIXEL
    assert "no-store" in answer.headers["Cache-Control"]
    assert answer.cookie is not None
    uuid = answer.uuid
    assert len(uuid) == 38
    assert uuid.isdigit()
    assert "SameSite=None" in answer.cookie
    assert "Secure" not in answer.cookie  # plain HTTP
    assert _mappings() == {(21, "abc", uuid)}


def test_a_returning_visitor_keeps_the_cookie_and_refreshes_the_mapping() -> None:
    profile = ProfileFactory.create()
    old = timezone.now() - timedelta(days=3)
    IDMappingFactory.create(
        data_source_id=21, dpuuid="abc", profile=profile, first_seen_at=old, last_seen_at=old
    )
    answer = get("/ibs:dpid=21&dpuuid=abc", cookie=profile.uuid)
    assert answer.status == 200
    assert answer.cookie is None
    mapping = IDMapping.objects.get()
    assert mapping.first_seen_at == old
    assert mapping.last_seen_at > old
    assert Profile.objects.count() == 1


def test_over_https_the_cookie_is_secure() -> None:
    cookie = get("/ibs:dpid=21&dpuuid=abc", https=True).cookie
    assert cookie is not None
    assert "Secure" in cookie


def test_query_form_cid_form_and_encodings() -> None:
    uuid = "1" * 38
    assert get("/ibs?dpid=21&dpuuid=q1", cookie=uuid).status == 200
    answer = get(
        "/ibs:d_cid=21%01caf%C3%A9&d_cid=22%01a%26b%3Dc%01" + "1&d_cid=22%01x+y%20z",
        cookie=uuid,
    )
    assert answer.status == 200
    assert _mappings() == {
        (21, "q1", uuid),
        (21, "café", uuid),  # UTF-8, decoded
        (22, "a&b=c", uuid),  # an encoded & and = stay in the ID; the state field is read
        (22, "x+y z", uuid),  # '+' is a plus sign; %20 a space
    }


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("/ibs:dpid=99&dpuuid=a", 1),
        ("/ibs:dpid=abc&dpuuid=a", 1),
        ("/ibs:dpid=23&dpuuid=a", 2),
        ("/ibs:dpid=21&dpuuid=%FF%FE", 3),
        ("/ibs:d_cid=21%01", 9),
        ("/ibs:d_cid=21", 3),
        ("/ibs:dpid=21&dpuuid=a:b", 4),
        ("/ibs:dpid=21&dpuuid=a%3Ab", 4),
        ("/ibs:dpid=21&dpuuid=a%253Ab", 4),  # encoded twice: '%3A' once decoded
        ("/ibs:dpid=21&dpuuid=a%07b", 3),  # a control character
        ("/ibs:dpid=21&dpuuid=a%C2%85b", 3),  # a C1 control character (NEL)
        ("/ibs:d_cid=21%01a%1Bb", 3),
        ("/ibs:dpid=20915&dpuuid=not-a-device-id", 3),  # IDFA: uppercase 8-4-4-4-12 hex
        ("/ibs:dpid=20914&dpuuid=6D92078A-8246-4BA4-AE5B-76104861E7DC", 3),  # GAID: lowercase
        ("/ibs:dpid=21&dpuuid=a&redir=https%3A%2F%2Fpartner.example%2F%C3%A9", 3),  # non-ASCII
        ("/ibs:dpid=21&dpuuid=a&redir=https%3A%2F%2Fpartner.example%2F%E2%82%AC", 3),
        ("/ibs:dpid=21&dpuuid=a&redir=https%3A%2F%2Fpartner.example%2F%0D%0ASet-Cookie:x", 3),
        ("/ibs:" + "&".join(f"d_cid={21 + n % 2}%01id{n}" for n in range(11)), 5),
        ("/ibs:d_cid=21%01a&d_cid=21%01b&d_cid=21%01c&d_cid=21%01d", 5),
        ("/ibs:dpid=21&dpuuid=a&redir=https%3A%2F%2Fevil.example%2F", 6),
        ("/ibs:dpid=21&dpuuid=a&redir=https%3A%2F%2Fpartner.example%40evil.example%2F", 6),
        ("/ibs:dpid=21&dpuuid=a&redir=%2F%2Fevil.example%2F", 6),
        ("/ibs:dpid=21&dpuuid=a&redir=javascript%3Aalert(1)", 6),
        ("/ibs:dpid=21&dpuuid=a&redir=https%3A%2F%2Fpartner.example.evil.example%2F", 6),
        ("/ibs:dpid=21&dpuuid=a&redir=https%3A%2F%2Fcdn.example%2F", 6),  # not a subdomain
        ("/ibs:dpid=22&dpuuid=a&redir=https%3A%2F%2Fpartner.example%2F", 6),  # not 22's host
        ("/ibs:dpid=21&dpuuid=a&gdpr=1", 7),
        ("/ibs:dpid=21&dpuuid=a&gdpr_consent=xyz", 7),
        ("/ibs:dpid=21&dpuuid=a&gdpr=2&gdpr_consent=xyz", 7),
        ("/ibs:dpid=21&dpuuid=a&gdpr=1&gdpr_consent=", 8),
        ("/ibs:dpid=21", 9),
    ],
)
def test_every_error_answers_json_and_stores_nothing(target: str, code: int) -> None:
    answer = get(target)
    assert answer.status == 400
    assert answer.headers["Content-Type"] == "application/json"
    assert code in answer.error_codes
    assert answer.cookie is None
    assert not IDMapping.objects.exists()
    assert not Profile.objects.exists()


def test_allowed_redirects_get_the_uuid() -> None:
    answer = get(
        "/ibs:dpid=21&dpuuid=a&redir=https%3A%2F%2Fpartner.example%2Fback%3Fuid%3D%24%7BDD_UUID%7D"
    )
    assert answer.status == 302
    uuid = IDMapping.objects.get().profile.uuid
    assert answer.headers["Location"] == f"https://partner.example/back?uid={uuid}"
    sub = get("/ibs:dpid=21&dpuuid=b&redir=https%3A%2F%2Fimg.cdn.example%2Fp.gif", cookie=uuid)
    assert sub.headers["Location"] == "https://img.cdn.example/p.gif"


def test_gdpr_with_consent_stores() -> None:
    assert get("/ibs:dpid=21&dpuuid=a&gdpr=1&gdpr_consent=CO123").status == 200
    assert get("/ibs:dpid=21&dpuuid=b&gdpr=0&gdpr_consent=").status == 200
    assert IDMapping.objects.count() == 2


def test_caps_evict_the_oldest() -> None:
    long_ago = timezone.now() - timedelta(days=50)
    crowd = [ProfileFactory.create() for _ in range(100)]
    for n, profile in enumerate(crowd):
        at = long_ago + timedelta(minutes=n)
        IDMappingFactory.create(
            data_source_id=21, dpuuid="shared", profile=profile, first_seen_at=at, last_seen_at=at
        )
    get("/ibs:dpid=21&dpuuid=shared")  # a 101st device for this DPUUID
    assert IDMapping.objects.filter(dpuuid="shared").count() == 100
    assert not IDMapping.objects.filter(profile=crowd[0]).exists()  # the oldest went

    me = ProfileFactory.create()
    for n in range(10):
        at = long_ago + timedelta(minutes=n)
        IDMappingFactory.create(
            data_source_id=22, dpuuid=f"d{n}", profile=me, first_seen_at=at, last_seen_at=at
        )
    get("/ibs:dpid=22&dpuuid=d10", cookie=me.uuid)  # an 11th DPUUID for this device
    held = set(IDMapping.objects.filter(profile=me).values_list("dpuuid", flat=True))
    assert held == {f"d{n}" for n in range(1, 11)}


def test_idsync_expire_deletes_mappings_unseen_for_120_days() -> None:
    now = timezone.now()
    for dpuuid, days in (("old", 121), ("recent", 119)):
        at = now - timedelta(days=days)
        IDMappingFactory.create(data_source_id=21, dpuuid=dpuuid, first_seen_at=at, last_seen_at=at)
    out = StringIO()
    call_command("idsync_expire", stdout=out)
    assert "1 ID mapping unseen for 120 days deleted" in out.getvalue()
    assert set(IDMapping.objects.values_list("dpuuid", flat=True)) == {"recent"}


def test_a_visitor_opts_out_of_their_own_mappings_only() -> None:
    uuid, other = "2" * 38, "3" * 38
    get("/ibs:dpid=21&dpuuid=u1", cookie=uuid)
    get("/ibs:dpid=22&dpuuid=u1", cookie=uuid)
    get("/ibs:dpid=21&dpuuid=u1", cookie=other)  # the same ID in another browser
    answer = get("/optout?d_cid=21%01u1", cookie=uuid)
    assert answer.status == 200
    assert json.loads(answer.body) == {"opted_out": 1}
    assert _mappings() == {(22, "u1", uuid), (21, "u1", other)}
    assert get("/ibs:dpid=21&dpuuid=u1", cookie=uuid).status == 200
    assert _mappings() == {(22, "u1", uuid), (21, "u1", other)}  # never mapped to them again
    assert get("/ibs:dpid=21&dpuuid=u2", cookie=uuid).status == 200  # other IDs still are
    assert (21, "u2", uuid) in _mappings()
    assert get("/ibs:dpid=21&dpuuid=u1", cookie="4" * 38).status == 200  # a new visitor too
    assert (21, "u1", "4" * 38) in _mappings()
    assert get("/optout?d_cid=99%01u1", cookie=uuid).error_codes == [1]


def test_an_opt_out_without_the_visitors_cookie_changes_nothing() -> None:
    """Before: an unauthenticated GET deleted anyone's mappings and blocked the ID for good."""
    victim = "5" * 38
    get("/ibs:dpid=21&dpuuid=victim", cookie=victim)
    answer = get("/optout?d_cid=21%01victim")
    assert answer.status == 200
    assert json.loads(answer.body) == {"opted_out": 0}
    assert answer.cookie is None
    assert _mappings() == {(21, "victim", victim)}
    assert not IDSyncOptOut.objects.exists()
    # An attacker's own cookie only opts the attacker out.
    get("/ibs:dpid=21&dpuuid=victim", cookie="6" * 38)
    get("/optout?d_cid=21%01victim", cookie="6" * 38)
    assert _mappings() == {(21, "victim", victim)}
    assert get("/ibs:dpid=21&dpuuid=victim", cookie=victim).status == 200
    assert _mappings() == {(21, "victim", victim)}


def test_outbound_sync_sends_the_visitor_to_the_partner() -> None:
    answer = get("/idsync/out/21")
    assert answer.status == 302
    uuid = answer.uuid
    assert answer.headers["Location"] == f"https://partner.example/sync?our_id={uuid}"
    assert get("/idsync/out/22").status == 404  # no partner URL configured
    assert get("/idsync/out/99").status == 404


def test_other_paths_go_to_django() -> None:
    assert get("/admin/").body == b"django"
    assert get("/ibsx").body == b"django"


def _lock_timeout() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        row = cursor.fetchone()
    assert row is not None
    return str(row[0])


def test_writes_wait_briefly_for_a_lock_and_django_keeps_its_own_lock_timeout(
    settings: Any,
) -> None:
    """The endpoint bounds its own lock waits (IDSYNC_LOCK_TIMEOUT_MS); where Django shares
    the connection (this application, as the portal pool runs it), Django's requests get
    the connection back unbounded. The ID-sync pool keeps the bound in the session."""
    settings.IDSYNC_LOCK_TIMEOUT_MS = 35
    default = _lock_timeout()
    seen: list[str] = []

    def _peek(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(_lock_timeout())
        return _django(environ, start_response)

    peeking = with_idsync_endpoints(_peek)
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO="/ibs:dpid=21&dpuuid=lt", RAW_URI="/ibs:dpid=21&dpuuid=lt")
    b"".join(peeking(environ, lambda *a: None))
    assert IDMapping.objects.filter(dpuuid="lt").exists()
    assert _lock_timeout() == default
    environ.update(PATH_INFO="/admin/")
    b"".join(peeking(environ, lambda *a: None))
    assert seen == [default]
    pool = with_idsync_endpoints(idsync_only)  # the ID-sync pool's application
    environ.update(PATH_INFO="/ibs:dpid=21&dpuuid=lt2", RAW_URI="/ibs:dpid=21&dpuuid=lt2")
    try:
        b"".join(pool(environ, lambda *a: None))
        assert _lock_timeout() == "35ms"
    finally:
        _session_given_back()
    assert _lock_timeout() == default


def _session_settings_changed() -> dict[str, str]:
    """The settings of the endpoint's session that differ from the session's start."""
    names = ["synchronous_commit", "plan_cache_mode", "lock_timeout"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)"
            " AND setting IS DISTINCT FROM reset_val",
            [names],
        )
        return dict(cursor.fetchall())


@pytest.mark.django_db(transaction=True)  # autocommit, as in production: SETs are kept
def test_django_gets_its_own_session_back_after_an_id_sync_call_on_the_portal_pool() -> None:
    """Where Django shares the connection (the portal pool, which answers /ibs: too), an
    ID-sync call leaves none of its session settings behind: before, Django's own requests
    on that thread's connection then committed with synchronous_commit off (an upload
    answered 201 could be lost by a PostgreSQL crash) and planned generically."""
    connection.close()  # a connection of its own (others' SETs were rolled back with them)
    seen: list[dict[str, str]] = []

    def _peek(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(_session_settings_changed())
        return _django(environ, start_response)

    portal = with_idsync_endpoints(_peek)
    for target in ("/ibs:dpid=21&dpuuid=s1", "/ibs:dpid=21&dpuuid=s2"):  # set up, then reused
        environ: dict[str, Any] = {}
        setup_testing_defaults(environ)
        environ.update(PATH_INFO=target, RAW_URI=target)
        b"".join(portal(environ, lambda *a: None))
        environ.update(PATH_INFO="/admin/")
        b"".join(portal(environ, lambda *a: None))
    assert IDMapping.objects.filter(dpuuid__in=["s1", "s2"]).count() == 2
    assert seen == [{}, {}]
