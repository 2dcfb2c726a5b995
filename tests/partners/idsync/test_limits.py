"""Floods and forged cookies against the ID-sync endpoints (issue 22), called in this process
against the test database and the test Redis: the variants an attacker would try. The same
through the real gunicorn pool: test_pool.py."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.db.migrations.recorder import MigrationRecorder
from django.urls import reverse
from django.utils import timezone

from partners.idsync import limits
from partners.idsync.cookies import signed_value
from partners.idsync.endpoint import PIXEL
from partners.idsync.limits import KEY_PREFIX, refused_by_day
from partners.models import DataSource, IDMapping, IDSyncOptOut
from portal.auth import told_client_address
from portal.settings import env_rate
from segments.models import Profile
from tests.factories import DataSourceFactory, IDMappingFactory, PartnerFactory, ProfileFactory
from tests.partners.idsync.test_endpoint import get

pytestmark = pytest.mark.django_db

DAY = 86400


@pytest.fixture(autouse=True)
def world() -> dict[str, DataSource]:
    from partners.idsync.endpoint import sources

    sources.clear()
    partner = PartnerFactory.create()
    return {
        "s21": DataSourceFactory.create(
            dpid=21,
            partner=partner,
            redirect_hosts=["partner.example"],
            idsync_url_template="https://partner.example/sync?our_id=${DD_UUID}",
        ),
        "s22": DataSourceFactory.create(dpid=22, partner=partner),
    }


def _counters() -> dict[str, int]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = sorted(k.decode() for k in client.scan_iter(match=f"{KEY_PREFIX}new:*"))
    return {k: int(client.get(k) or 0) for k in keys}


def _mapped(dpuuid: str) -> list[str]:
    return list(IDMapping.objects.filter(dpuuid=dpuuid).values_list("profile__uuid", flat=True))


# --- Cookies -----------------------------------------------------------------------------------

VICTIM = "7" * 38
OTHER = "8" * 38


def _forged() -> dict[str, str]:
    """Cookie headers an attacker would send to pass for VICTIM (or for anyone)."""
    good = signed_value(VICTIM)
    signature = good.split(":", 1)[1]
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    return {
        "38 zeros": "dd_uuid=" + "0" * 38,
        "the victim's UUID, unsigned": f"dd_uuid={VICTIM}",
        "a tampered signature": f"dd_uuid={VICTIM}:{flipped}",
        "another UUID's signature": f"dd_uuid={OTHER}:{signature}",
        "a signature without its UUID": f"dd_uuid=:{signature}",
        "the signed value quoted": f'dd_uuid="{good}"',
        "spaces around the =": f"dd_uuid = {good}",
        "the name in capitals": f"DD_UUID={good}",
        "a signature made with another salt": "dd_uuid=" + signing.Signer(salt="x").sign(VICTIM),
        "a very long cookie": f"dd_uuid={VICTIM}:" + "A" * 6000,
        "39 digits, signed as if": "dd_uuid=" + "7" * 39 + ":" + signature,
        "five bad ones before the good one": "; ".join([f"dd_uuid={VICTIM}:x{n}" for n in range(5)])
        + f"; dd_uuid={good}",
    }


@pytest.mark.parametrize("what", list(_forged()))
def test_a_forged_cookie_is_no_cookie_and_nothing_is_written_for_it(
    what: str, settings: Any
) -> None:
    """Before: any 38 digits in the cookie became a profile, and a visitor's UUID (which
    partners know) was all it took to pass for them."""
    settings.IDSYNC_PLAIN_COOKIES_BEFORE = timezone.now() - timedelta(days=1)
    ProfileFactory.create(uuid=VICTIM)  # made since the cookies are signed
    answer = get("/ibs:dpid=21&dpuuid=forged", raw_cookie=_forged()[what])
    assert answer.status == 200
    uuid = answer.uuid  # a new UUID, in a signed cookie
    assert uuid not in (VICTIM, OTHER, "0" * 38)
    assert _mapped("forged") == [uuid]
    assert not Profile.objects.filter(uuid__in=["0" * 38, OTHER]).exists()
    assert not IDMapping.objects.filter(profile__uuid=VICTIM).exists()


def test_the_signed_cookie_is_the_visitor_and_the_uuid_elsewhere_stays_38_digits() -> None:
    first = get(
        "/ibs:dpid=21&dpuuid=a&redir=https%3A%2F%2Fpartner.example%2F%3Fu%3D%24%7BDD_UUID%7D"
    )
    uuid = first.uuid
    assert first.headers["Location"] == f"https://partner.example/?u={uuid}"
    again = get("/ibs:dpid=21&dpuuid=b", raw_cookie=f"dd_uuid={signed_value(uuid)}")
    assert again.cookie is None
    assert _mapped("b") == [uuid]
    out = get("/idsync/out/21", cookie=uuid)
    assert (out.status, out.cookie) == (302, None)
    assert out.headers["Location"] == f"https://partner.example/sync?our_id={uuid}"


def test_a_cookie_signed_with_a_former_key_is_taken_and_issued_again(settings: Any) -> None:
    uuid = ProfileFactory.create().uuid
    old_cookie = f"dd_uuid={signed_value(uuid)}"
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-key-" + "x" * 40
    answer = get("/ibs:dpid=21&dpuuid=rotated", raw_cookie=old_cookie)
    assert answer.uuid == uuid  # signed with the new key now
    assert _mapped("rotated") == [uuid]
    assert get("/ibs:dpid=21&dpuuid=r2", cookie=uuid).cookie is None
    settings.SECRET_KEY_FALLBACKS = []  # the rotation is over: the old signature is no more
    assert get("/ibs:dpid=21&dpuuid=r3", raw_cookie=old_cookie).uuid != uuid


def test_two_cookies_of_the_name_the_first_verified_one_counts() -> None:
    a, b = ProfileFactory.create().uuid, ProfileFactory.create().uuid
    both = f"dd_uuid={signed_value(a)}; dd_uuid={signed_value(b)}"
    assert get("/ibs:dpid=21&dpuuid=x1", raw_cookie=both).cookie is None
    forged_first = f"dd_uuid={'0' * 38}; dd_uuid={VICTIM}:bad; dd_uuid={signed_value(b)}"
    assert get("/ibs:dpid=21&dpuuid=x2", raw_cookie=forged_first).cookie is None
    plain_first = f"dd_uuid={a}; dd_uuid={signed_value(b)}"  # the signed one wins
    assert get("/ibs:dpid=21&dpuuid=x3", raw_cookie=plain_first).cookie is None
    assert (_mapped("x1"), _mapped("x2"), _mapped("x3")) == ([a], [b], [b])


def test_a_plain_cookie_of_a_profile_from_before_is_kept_and_issued_again_signed(
    settings: Any,
) -> None:
    old = ProfileFactory.create()
    Profile.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=30))
    old.refresh_from_db()  # from before the cookies were signed
    answer = get("/ibs:dpid=21&dpuuid=p1", raw_cookie=f"dd_uuid={old.uuid}")
    assert answer.uuid == old.uuid  # the same UUID, now signed
    assert _mapped("p1") == [old.uuid]
    # Made before the upgrade's time: taken; made after it: another visitor's, not taken.
    settings.IDSYNC_PLAIN_COOKIES_BEFORE = timezone.now() + timedelta(minutes=1)
    assert get("/ibs:dpid=21&dpuuid=p2", raw_cookie=f"dd_uuid={old.uuid}").uuid == old.uuid
    settings.IDSYNC_PLAIN_COOKIES_BEFORE = old.created_at
    assert get("/ibs:dpid=21&dpuuid=p3", raw_cookie=f"dd_uuid={old.uuid}").uuid != old.uuid
    # Once the cookies of before have all expired, none is taken.
    settings.IDSYNC_PLAIN_COOKIES_BEFORE = timezone.now() - timedelta(days=800)
    Profile.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=900))
    assert get("/ibs:dpid=21&dpuuid=p4", raw_cookie=f"dd_uuid={old.uuid}").uuid != old.uuid
    assert _mapped("p3") != [old.uuid]
    # A plain cookie without a profile is no cookie.
    assert get("/ibs:dpid=21&dpuuid=p5", raw_cookie=f"dd_uuid={OTHER}").uuid != OTHER
    # ... and /idsync/out/ takes and upgrades the plain cookie the same way.
    settings.IDSYNC_PLAIN_COOKIES_BEFORE = None
    out = get("/idsync/out/21", raw_cookie=f"dd_uuid={old.uuid}")
    assert out.uuid == old.uuid
    assert out.headers["Location"].endswith(old.uuid)


def test_with_the_setting_unset_a_plain_cookie_is_taken_only_for_a_profile_from_before_signing(
    settings: Any,
) -> None:
    """Before, with IDSYNC_PLAIN_COOKIES_BEFORE unset, the bare UUID of any profile was
    taken: one made since cookies are signed (its UUID guessed, or leaked by a partner)
    passed for its visitor. Now the time the marker migration was applied is the cutoff."""
    settings.IDSYNC_PLAIN_COOKIES_BEFORE = None
    recent = ProfileFactory.create()  # made now: since the cookies are signed
    answer = get("/ibs:dpid=21&dpuuid=guessed", raw_cookie=f"dd_uuid={recent.uuid}")
    assert answer.status == 200
    assert answer.uuid != recent.uuid  # a new visitor, in a signed cookie
    assert _mapped("guessed") == [answer.uuid]
    assert not IDMapping.objects.filter(profile=recent).exists()
    optout = get("/optout?d_cid=21%01guessed", raw_cookie=f"dd_uuid={recent.uuid}")
    assert json.loads(optout.body) == {"opted_out": 0}
    assert get("/idsync/out/21", raw_cookie=f"dd_uuid={recent.uuid}").uuid != recent.uuid

    signed_since = MigrationRecorder.Migration.objects.get(
        app="partners", name="0027_idsync_signed_cookies"
    ).applied
    before = ProfileFactory.create()
    Profile.objects.filter(pk=before.pk).update(created_at=signed_since - timedelta(seconds=1))
    answer = get("/ibs:dpid=21&dpuuid=legacy", raw_cookie=f"dd_uuid={before.uuid}")
    assert answer.uuid == before.uuid  # taken, and issued again signed
    assert _mapped("legacy") == [before.uuid]
    Profile.objects.filter(pk=before.pk).update(created_at=signed_since + timedelta(seconds=1))
    assert get("/ibs:dpid=21&dpuuid=x", raw_cookie=f"dd_uuid={before.uuid}").uuid != before.uuid
    # The setting still decides when set.
    settings.IDSYNC_PLAIN_COOKIES_BEFORE = timezone.now() + timedelta(minutes=1)
    assert get("/ibs:dpid=21&dpuuid=y", raw_cookie=f"dd_uuid={recent.uuid}").uuid == recent.uuid


def test_the_opt_out_acts_for_the_verified_cookie_only(settings: Any) -> None:
    settings.IDSYNC_PLAIN_COOKIES_BEFORE = timezone.now() - timedelta(days=1)
    victim = ProfileFactory.create(uuid=VICTIM)
    IDMappingFactory.create(data_source_id=21, dpuuid="v", profile=victim)
    for what, header in _forged().items():
        answer = get("/optout?d_cid=21%01v", raw_cookie=header)
        assert json.loads(answer.body) == {"opted_out": 0}, what
    assert _mapped("v") == [VICTIM]
    assert not IDSyncOptOut.objects.exists()
    # A signed cookie whose profile was never made has nothing to opt out.
    assert json.loads(get("/optout?d_cid=21%01v", cookie=OTHER).body) == {"opted_out": 0}
    assert not Profile.objects.filter(uuid=OTHER).exists()
    # The visitor's own signed cookie does.
    assert json.loads(get("/optout?d_cid=21%01v", cookie=VICTIM).body) == {"opted_out": 1}
    assert _mapped("v") == []
    # A plain cookie from before: taken, and issued again signed.
    old = ProfileFactory.create()
    Profile.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    answer = get("/optout?d_cid=21%01w", raw_cookie=f"dd_uuid={old.uuid}")
    assert json.loads(answer.body) == {"opted_out": 1}
    assert answer.uuid == old.uuid


# --- Limits ------------------------------------------------------------------------------------


def test_new_rows_from_one_address_are_cut_at_its_limit(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.IDSYNC_NEW_PER_ADDRESS = (8, DAY)
    caplog.set_level(logging.WARNING, logger="partners.idsync.limits")
    # A d_cid batch counts each ID: a profile and 3 mappings.
    batch = "/ibs:d_cid=21%01b1&d_cid=21%01b2&d_cid=22%01b3"
    assert get(batch, REMOTE_ADDR="10.0.0.1").status == 200
    answers = [get(f"/ibs:dpid=21&dpuuid=n{n}", REMOTE_ADDR="10.0.0.1") for n in range(4)]
    assert [a.status for a in answers] == [200] * 4
    assert all(a.body.startswith(b"GIF89a") and a.cookie for a in answers)
    # 4 + 2 + 2 = 8 rows written; the last two calls wrote nothing.
    assert Profile.objects.count() == 3
    assert sorted(IDMapping.objects.values_list("dpuuid", flat=True)) == [
        "b1",
        "b2",
        "b3",
        "n0",
        "n1",
    ]
    assert get("/ibs:dpid=21&dpuuid=elsewhere", REMOTE_ADDR="10.0.0.2").status == 200
    assert _mapped("elsewhere")
    # Said once, in the log: which address, which limit.
    crossings = [r.getMessage() for r in caplog.records if "went past" in r.getMessage()]
    assert len(crossings) == 1
    assert "10.0.0.1" in crossings[0]
    assert "IDSYNC_NEW_PER_ADDRESS" in crossings[0]
    today = refused_by_day(dpid=21, days=1)[0]
    assert (today.over_address_limit, today.over_data_source_limit) == (2, 0)


def test_only_calls_that_would_write_are_counted(settings: Any) -> None:
    settings.IDSYNC_NEW_PER_ADDRESS = (3, DAY)
    profile = ProfileFactory.create()
    IDMappingFactory.create(data_source_id=21, dpuuid="known", profile=profile)
    # A returning visitor whose IDs are all mapped: no count at all, however often.
    for _ in range(10):
        assert (
            get("/ibs:dpid=21&dpuuid=known", cookie=profile.uuid, REMOTE_ADDR="10.5.0.1").cookie
            is None
        )
    assert _counters() == {}
    # A new ID for that visitor counts 1; a signed cookie never written counts its profile.
    get("/ibs:dpid=21&dpuuid=second", cookie=profile.uuid, REMOTE_ADDR="10.5.0.1")
    assert list(_counters().values())[:1] == [1]
    get(
        "/ibs:dpid=22&dpuuid=third", cookie=OTHER, REMOTE_ADDR="10.5.0.1"
    )  # from /idsync/out/, say: no profile yet
    assert _mapped("third") == [OTHER]
    assert sorted(_counters().values()) == [1, 2, 3]  # the address 3; 21: 1; 22: 2
    # The address is at its limit: the next new ID is refused, the known one still refreshed.
    get("/ibs:dpid=21&dpuuid=fourth", cookie=profile.uuid, REMOTE_ADDR="10.5.0.1")
    assert _mapped("fourth") == []
    IDMapping.objects.filter(dpuuid="known").update(
        last_seen_at=timezone.now() - timedelta(hours=2)
    )
    get("/ibs:dpid=21&dpuuid=known", cookie=profile.uuid, REMOTE_ADDR="10.5.0.1")
    assert IDMapping.objects.get(dpuuid="known").last_seen_at > timezone.now() - timedelta(
        minutes=1
    )


def test_the_data_source_limit_holds_across_addresses(settings: Any) -> None:
    settings.IDSYNC_NEW_PER_DPID = (6, DAY)
    for n in range(5):
        get(f"/ibs:dpid=21&dpuuid=d{n}", REMOTE_ADDR=f"10.1.0.{n}")
    assert IDMapping.objects.filter(data_source_id=21).count() == 3
    assert refused_by_day(dpid=21, days=1)[0].over_data_source_limit == 2
    assert get("/ibs:dpid=22&dpuuid=free", REMOTE_ADDR="10.1.0.9").status == 200
    assert _mapped("free")


def test_a_flood_refused_by_its_address_limit_leaves_the_data_source_budget_whole(
    settings: Any,
) -> None:
    """Before, every call was counted and then checked: a flood from one address, refused
    by the address's limit, still ate the data source's budget and locked out its other
    visitors."""
    settings.IDSYNC_NEW_PER_ADDRESS = (4, DAY)
    settings.IDSYNC_NEW_PER_DPID = (10, DAY)
    for n in range(2):  # a profile and a mapping each: the address is at its limit
        get(f"/ibs:dpid=21&dpuuid=mine{n}", REMOTE_ADDR="10.9.0.1")
    before = _counters()
    assert sorted(before.values()) == [4, 4]  # the address; data source 21
    for n in range(50):
        answer = get(f"/ibs:dpid=21&dpuuid=flood{n}", REMOTE_ADDR="10.9.0.1")
        assert (answer.status, answer.body) == (200, PIXEL)
    assert _counters() == before  # refused: nothing counted, anywhere
    assert not IDMapping.objects.filter(dpuuid__startswith="flood").exists()
    assert refused_by_day(dpid=21, days=1)[0].over_address_limit == 50
    # Other visitors of the data source use the rest of its budget: 3 calls of 2 rows.
    for n in range(3):
        get(f"/ibs:dpid=21&dpuuid=other{n}", REMOTE_ADDR=f"10.9.1.{n}")
        assert _mapped(f"other{n}"), n
    # A call too big for what is left is refused whole; a smaller one still fits.
    settings.IDSYNC_NEW_PER_DPID = (13, DAY)
    three = "/ibs:d_cid=21%01big1&d_cid=21%01big2&d_cid=21%01big3"  # a profile and 3 IDs
    get(three, REMOTE_ADDR="10.9.2.1")
    assert _mapped("big1") == []
    get("/ibs:dpid=21&dpuuid=small", REMOTE_ADDR="10.9.2.2")
    assert _mapped("small")


def test_the_limits_script_is_loaded_again_when_redis_forgot_it(settings: Any) -> None:
    settings.IDSYNC_NEW_PER_ADDRESS = (2, DAY)
    get("/ibs:dpid=21&dpuuid=s1", REMOTE_ADDR="10.9.3.1")
    redis.Redis.from_url(settings.REDIS_URL).script_flush()  # as a restarted Redis
    get("/ibs:dpid=21&dpuuid=s2", REMOTE_ADDR="10.9.3.1")
    assert _mapped("s1")
    assert not _mapped("s2")  # counted and refused as before the flush
    get("/ibs:dpid=21&dpuuid=s3", REMOTE_ADDR="10.9.3.2")
    assert _mapped("s3")


def test_rotating_data_sources_share_the_address_limit(settings: Any) -> None:
    settings.IDSYNC_NEW_PER_ADDRESS = (6, DAY)
    for n in range(6):
        get(f"/ibs:dpid={21 + n % 2}&dpuuid=rot{n}", REMOTE_ADDR="10.3.0.1")
    assert IDMapping.objects.count() == 3


def test_rotating_ipv6_addresses_of_one_subnet_share_its_limit(settings: Any) -> None:
    settings.IDSYNC_NEW_PER_ADDRESS = (4, DAY)
    for n in range(6):
        get(f"/ibs:dpid=21&dpuuid=six{n}", REMOTE_ADDR=f"2001:db8:1:2:{n:x}::{n + 1:x}")
    assert IDMapping.objects.count() == 2
    get("/ibs:dpid=21&dpuuid=next-subnet", REMOTE_ADDR="2001:db8:1:3::1")
    assert _mapped("next-subnet")


def test_opt_outs_count_and_answer_429_past_the_limit(settings: Any) -> None:
    settings.IDSYNC_NEW_PER_ADDRESS = (4, DAY)
    me = ProfileFactory.create().uuid
    ids = "&".join(f"d_cid=21%01o{n}" for n in range(3))
    assert json.loads(get(f"/optout?{ids}", cookie=me, REMOTE_ADDR="10.6.0.1").body) == {
        "opted_out": 3
    }
    answer = get(f"/optout?{ids.replace('o', 'p')}", cookie=me, REMOTE_ADDR="10.6.0.1")
    assert answer.status == 429
    assert answer.error_codes == [10]
    assert IDSyncOptOut.objects.count() == 3


def test_with_redis_down_nothing_is_limited_and_the_log_says_so(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    settings.IDSYNC_NEW_PER_ADDRESS = (1, DAY)
    caplog.set_level(logging.WARNING, logger="partners.idsync.limits")
    for n in range(3):
        assert get(f"/ibs:dpid=21&dpuuid=r{n}", REMOTE_ADDR="10.4.0.1").status == 200
    assert IDMapping.objects.count() == 3
    assert [r.getMessage() for r in caplog.records if "Redis unreachable" in r.getMessage()]


def test_threads_of_one_process_count_apart(caplog: pytest.LogCaptureFixture) -> None:
    """The portal pool's threads answer /ibs: too: each has its own Redis connection (one
    shared would mix up their replies)."""
    import threading

    caplog.set_level(logging.WARNING, logger="partners.idsync.limits")

    def count(thread: int) -> None:
        for _ in range(100):
            assert limits.admit(address=f"10.7.{thread}.1", rows=1, rows_per_dpid={21: 1})

    threads = [threading.Thread(target=count, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counters = _counters()
    assert sorted(v for k, v in counters.items() if ":new:a:" in k) == [100] * 8
    assert [v for k, v in counters.items() if ":new:d:21:" in k] == [800]
    assert not [r for r in caplog.records if "Redis unreachable" in r.getMessage()]


def test_a_redis_that_hangs_costs_one_call_a_short_wait_not_every_call(settings: Any) -> None:
    """A server that takes the connection and never answers: the first call waits out the
    short timeout (0.25 s), then the process leaves Redis alone for a while."""
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = time.monotonic()
        for n in range(10):
            assert get(f"/ibs:dpid=21&dpuuid=h{n}").status == 200
        took = time.monotonic() - started
    print(f"10 calls with Redis hanging: {took:.2f} s")
    assert took < 2.0  # 10 timeouts would be 2.5 s
    assert IDMapping.objects.count() == 10


# --- The client's address ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "allowed", "address"),
    [
        ({"REMOTE_ADDR": "10.0.0.5"}, ["127.0.0.1"], "10.0.0.5"),
        # A client talking to the pool directly cannot choose its address.
        ({"REMOTE_ADDR": "10.0.0.5", "HTTP_X_REAL_IP": "1.2.3.4"}, ["127.0.0.1"], "10.0.0.5"),
        # X-Forwarded-For is never read, even from a trusted proxy.
        ({"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}, ["*"], None),
        # Behind the proxy: the address it says, in the one header it sets.
        (
            {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.3"},
            ["127.0.0.1"],
            "198.51.100.3",
        ),
        (
            {"REMOTE_ADDR": "10.9.0.7", "HTTP_X_REAL_IP": "2001:db8::1"},
            ["10.9.0.0/16"],
            "2001:db8::",
        ),
        (
            {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "::ffff:198.51.100.3"},
            ["127.0.0.1"],
            "198.51.100.3",
        ),
        (
            {"REMOTE_ADDR": "", "HTTP_X_REAL_IP": "1.2.3.4"},
            ["127.0.0.1"],
            "1.2.3.4",
        ),  # a unix socket
        # A proxy that says nothing (or nonsense): nobody in particular.
        ({"REMOTE_ADDR": "127.0.0.1"}, ["127.0.0.1"], None),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "junk"}, ["127.0.0.1"], None),
    ],
)
def test_the_client_address_is_the_portals(
    environ: dict[str, str], allowed: list[str], address: str | None, settings: Any
) -> None:
    """ID sync counts the client's address as the portal's limits do (one function)."""
    settings.TRUSTED_PROXIES = allowed
    assert told_client_address(environ) == address


def test_a_proxy_that_does_not_say_who_the_client_is_does_not_stop_every_visitor(
    settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without X-Real-IP every call through the proxy would count as the proxy's and the
    per-address limit would stop every new visitor: it is not applied then, and the log says
    why; the data sources' limits still hold."""
    settings.IDSYNC_NEW_PER_ADDRESS = (2, DAY)
    settings.IDSYNC_NEW_PER_DPID = (6, DAY)
    caplog.set_level(logging.WARNING, logger="partners.idsync.limits")
    monkeypatch.setattr(limits, "_proxy_warned_at", -1e9)  # said at most once a minute
    for n in range(4):
        get(f"/ibs:dpid=21&dpuuid=px{n}", REMOTE_ADDR="127.0.0.1")
    assert IDMapping.objects.count() == 3  # the data source's 6 rows, not the address's 2
    assert any("without X-Real-IP" in r.getMessage() for r in caplog.records)


def test_rates_are_read_as_django_ratelimit_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for text, rate in (("600/10m", (600, 600)), ("5/h", (5, 3600)), ("20000/d", (20000, DAY))):
        monkeypatch.setenv("X_RATE", text)
        assert env_rate("X_RATE", "1/s") == rate
    for bad in ("600", "600/10", "0/m", "x/m", "5/0m", "-1/m"):
        monkeypatch.setenv("X_RATE", bad)
        with pytest.raises(ImproperlyConfigured):
            env_rate("X_RATE", "1/s")


# --- What staff see ----------------------------------------------------------------------------


def test_the_data_source_page_shows_the_calls_over_the_limits(
    settings: Any, admin_client: Any
) -> None:
    settings.IDSYNC_NEW_PER_ADDRESS = (2, DAY)
    for n in range(4):
        get(f"/ibs:dpid=21&dpuuid=a{n}", REMOTE_ADDR="10.2.0.1")
    page = admin_client.get(reverse("admin:partners_datasource_change", args=[21]))
    text = page.content.decode()
    today = timezone.now().date().isoformat()
    assert f"{today}: 3 over a client address's limit, 0 over this data source's limit" in text
    other = admin_client.get(reverse("admin:partners_datasource_change", args=[22]))
    assert "ID-sync calls over the limits" in other.content.decode()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    down = admin_client.get(reverse("admin:partners_datasource_change", args=[21]))
    assert "unknown: Redis cannot be reached" in down.content.decode()
