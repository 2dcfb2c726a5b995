"""Floods and forged cookies against the ID-sync pool as production runs it (issue 22): gunicorn
from portal/gunicorn_conf.py with WEB_POOL=idsync, several sync worker processes, the test
database and Redis. The limits are counted in Redis, so they hold across the processes.

The test talks to the pool from 127.0.0.1, a trusted proxy by default (FORWARDED_ALLOW_IPS),
and says who the client is in X-Real-IP, as the README's nginx does."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from partners.models import IDMapping, IDSyncOptOut
from segments.models import Profile
from tests.factories import DataSourceFactory, PartnerFactory, ProfileFactory
from tests.test_production_web import Gunicorn, _environment, _free_port

pytestmark = pytest.mark.django_db(transaction=True)

REDIRECT = "&redir=https%3A%2F%2Fpartner.example%2Fback%3Fu%3D%24%7BDD_UUID%7D"


@pytest.fixture
def idsync_pool(settings: Any, tmp_path: Path) -> Iterator[Any]:
    """Start the ID-sync pool with ``extra`` environment; the test's SECRET_KEY, so the test
    can sign cookies as the pool does."""
    started: list[Gunicorn] = []

    def start(**extra: str) -> Gunicorn:
        env = _environment(
            settings, MEDIA_ROOT=str(tmp_path), SECRET_KEY=settings.SECRET_KEY, **extra
        )
        server = Gunicorn("portal.wsgi:idsync_application", {**env, "WEB_POOL": "idsync"})
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def sources() -> None:
    partner = PartnerFactory.create()
    DataSourceFactory.create(dpid=21, partner=partner, redirect_hosts=["partner.example"])
    DataSourceFactory.create(dpid=22, partner=partner)
    DataSourceFactory.create(dpid=24, partner=partner)


def call(
    server: Gunicorn, target: str, *, address: str | None = None, cookie: str | None = None
) -> tuple[int, dict[str, str]]:
    """GET ``target`` as the proxy would pass it on for a client at ``address`` (X-Real-IP,
    which the README's nginx sets in place of whatever the client sent)."""
    headers = {}
    if address is not None:
        headers["X-Real-IP"] = address
    if cookie is not None:
        headers["Cookie"] = cookie
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    conn.request("GET", target, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}


def cookie_value(headers: dict[str, str]) -> str:
    return headers["set-cookie"].split(";")[0].split("=", 1)[1]


def _day() -> int:
    return int(time.time() // 86400)


def test_a_flood_from_one_address_is_cut_at_its_limit_and_another_address_still_syncs(
    idsync_pool: Any,
) -> None:
    """Before: one client made 2,000 profiles and 18,000 mappings in under 7 seconds."""
    day = _day()
    server = idsync_pool(WEB_WORKERS="3", IDSYNC_NEW_PER_ADDRESS="60/d")
    # Each call: a new visitor (a profile) and three IDs (d_cid batches multiply the writes).
    targets = [f"/ibs:d_cid=21%01f{n}a&d_cid=21%01f{n}b&d_cid=22%01f{n}c" for n in range(150)]
    with ThreadPoolExecutor(12) as threads:
        answers = list(threads.map(lambda t: call(server, t, address="198.51.100.7"), targets))
    if _day() != day:
        pytest.skip("the day's window turned during the test")
    # Every call answered as the SPEC says: the pixel and a cookie...
    assert {status for status, _ in answers} == {200}
    assert all(headers["content-type"] == "image/gif" for _, headers in answers)
    assert all("set-cookie" in headers for _, headers in answers)
    # ... but only 60 new rows were written: 15 calls of a profile and 3 mappings.
    assert Profile.objects.count() == 15
    assert IDMapping.objects.count() == 45
    # Over the limit a redirect still goes, with the visitor's new UUID; nothing written.
    status, headers = call(server, "/ibs:dpid=21&dpuuid=late" + REDIRECT, address="198.51.100.7")
    assert status == 302
    uuid = cookie_value(headers).split(":")[0]
    assert headers["location"] == f"https://partner.example/back?u={uuid}"
    assert not IDMapping.objects.filter(dpuuid="late").exists()
    # Another address (and the first one's IPv6 neighbour) still syncs.
    for n, address in enumerate(("198.51.100.8", "2001:db8::7")):
        status, _ = call(server, f"/ibs:dpid=21&dpuuid=next-{n}", address=address)
        assert status == 200
        assert IDMapping.objects.filter(dpuuid=f"next-{n}").exists()
    # Staff see the refused calls, per data source and day (the data source's admin page).
    from partners.idsync.limits import refused_by_day

    today = refused_by_day(dpid=21, days=1)[0]
    assert (today.over_address_limit, today.over_data_source_limit) == (136, 0)
    assert refused_by_day(dpid=22, days=1)[0].over_address_limit == 135


def test_a_data_source_limit_holds_whatever_the_addresses_and_other_sources_still_sync(
    idsync_pool: Any,
) -> None:
    day = _day()
    server = idsync_pool(WEB_WORKERS="3", IDSYNC_NEW_PER_DPID="40/d")
    # Rotating addresses, IPv4 and IPv6, each a new visitor with one ID of 21: 2 rows a call.
    addresses = [f"203.0.113.{n}" for n in range(1, 60)] + [f"2001:db8:{n:x}::1" for n in range(60)]
    with ThreadPoolExecutor(12) as threads:
        answers = list(
            threads.map(
                lambda a: call(
                    server, f"/ibs:dpid=21&dpuuid=r-{a.replace(':', '.')}" + REDIRECT, address=a
                ),
                addresses,
            )
        )
    if _day() != day:
        pytest.skip("the day's window turned during the test")
    assert {status for status, _ in answers} == {302}
    assert IDMapping.objects.filter(data_source_id=21).count() == 20
    assert Profile.objects.count() == 20
    from partners.idsync.limits import refused_by_day

    assert refused_by_day(dpid=21, days=1)[0].over_data_source_limit == len(addresses) - 20
    # Another data source is not held by 21's limit.
    assert call(server, "/ibs:dpid=22&dpuuid=other", address="203.0.113.200")[0] == 200
    assert IDMapping.objects.filter(data_source_id=22).count() == 1


def test_a_client_rotating_the_address_header_itself_is_one_address(idsync_pool: Any) -> None:
    """Only a proxy of FORWARDED_ALLOW_IPS says who the client is: here the test is not one."""
    server = idsync_pool(IDSYNC_NEW_PER_ADDRESS="10/d", FORWARDED_ALLOW_IPS="192.0.2.254")
    day = _day()
    for n in range(12):
        assert call(server, f"/ibs:dpid=21&dpuuid=x{n}", address=f"203.0.113.{n + 1}")[0] == 200
    if _day() != day:
        pytest.skip("the day's window turned during the test")
    assert IDMapping.objects.count() == 5


def test_with_redis_down_id_sync_keeps_working_and_says_so(idsync_pool: Any) -> None:
    closed = f"redis://127.0.0.1:{_free_port()}/0"
    server = idsync_pool(WEB_WORKERS="2", IDSYNC_NEW_PER_ADDRESS="2/d", REDIS_URL=closed)
    for _ in range(4):  # the workers are up (and /healthz says what is down)
        assert call(server, "/healthz")[0] == 503
    for n in range(6):
        started = time.monotonic()
        assert call(server, f"/ibs:dpid=21&dpuuid=d{n}", address="198.51.100.9")[0] == 200
        print(f"call {n} with Redis down: {1000 * (time.monotonic() - started):.1f} ms")
    # Not counted, so not limited: every call wrote.
    assert IDMapping.objects.count() == 6
    server.stop()
    assert server.process.stderr is not None
    log = server.process.stderr.read().decode()
    assert "ID sync: Redis unreachable" in log


def test_forged_cookies_are_no_cookie_and_a_plain_cookie_of_a_known_visitor_is_upgraded(
    idsync_pool: Any,
) -> None:
    server = idsync_pool(WEB_WORKERS="2")
    known = ProfileFactory.create()
    # made before the cookies were signed (partners/0027 applied with the test database)
    Profile.objects.filter(pk=known.pk).update(created_at=timezone.now() - timedelta(days=30))
    # Before: any 38 digits became a profile.
    status, headers = call(server, "/ibs:dpid=21&dpuuid=zeros", cookie=f"dd_uuid={'0' * 38}")
    assert status == 200
    assert not Profile.objects.filter(uuid="0" * 38).exists()

    from partners.idsync.cookies import signed_value

    victim = "7" * 38
    victim_cookie = signed_value(victim)
    forged = {
        "zeros": "0" * 38,
        "another visitor's UUID unsigned": victim,
        "a tampered signature": victim_cookie[:-3]
        + ("AAA" if victim_cookie[-3:] != "AAA" else "BBB"),
        "another UUID's signature": "8" * 38 + ":" + victim_cookie.split(":")[1],
    }
    for what, value in forged.items():
        status, headers = call(
            server, f"/ibs:dpid=21&dpuuid=forged-{len(what)}", cookie=f"dd_uuid={value}"
        )
        assert status == 200, what
        issued = cookie_value(headers)
        uuid = issued.split(":")[0]
        assert uuid not in (victim, "0" * 38, "8" * 38), what
        assert issued == signed_value(uuid), what
        assert list(
            IDMapping.objects.filter(dpuuid=f"forged-{len(what)}").values_list(
                "profile__uuid", flat=True
            )
        ) == [uuid], what
    assert not Profile.objects.filter(uuid__in=[victim, "0" * 38, "8" * 38]).exists()
    # The opt-out acts for the verified cookie only.
    status, _ = call(server, "/optout?d_cid=21%01x", cookie=f"dd_uuid={'0' * 38}")
    assert status == 200
    assert not IDSyncOptOut.objects.exists()
    # A visitor holding a plain cookie from before keeps the UUID, re-issued signed.
    status, headers = call(server, "/ibs:dpid=21&dpuuid=legacy", cookie=f"dd_uuid={known.uuid}")
    assert status == 200
    assert cookie_value(headers) == signed_value(known.uuid)
    assert IDMapping.objects.get(dpuuid="legacy").profile == known
    # ... and with the signed one from then on: no new cookie.
    status, headers = call(
        server, "/ibs:dpid=21&dpuuid=legacy2", cookie=f"dd_uuid={signed_value(known.uuid)}"
    )
    assert "set-cookie" not in headers
    assert IDMapping.objects.get(dpuuid="legacy2").profile == known
    assert re.fullmatch(r"[0-9]{38}", known.uuid)
