"""Guessing is slow: logins (portal and admin) and password resets are throttled."""

from __future__ import annotations

import io
import time
from datetime import timedelta
from typing import Any

import pytest
from axes.models import AccessLog
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from tests.factories import PartnerFactory, PartnerUserFactory, UserFactory

PASSWORD = "the-right-password-42"


@pytest.fixture
def partner_user(db: Any) -> Any:
    user = UserFactory.create(username="acme", email="acme@partner.test")
    user.set_password(PASSWORD)
    user.save()
    PartnerUserFactory.create(user=user, partner=PartnerFactory.create())
    return user


@pytest.fixture
def staff_user(db: Any) -> Any:
    user = UserFactory.create(username="boss", email="boss@platform.test", is_staff=True)
    user.is_superuser = True
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.mark.parametrize(
    ("url", "username", "landing"),
    [("/portal/login/", "acme", "/portal/"), ("/admin/login/", "boss", "/admin/")],
)
def test_fifty_wrong_passwords_then_the_right_one_is_refused_until_the_cool_off(
    partner_user: Any, staff_user: Any, settings: Any, url: str, username: str, landing: str
) -> None:
    settings.AXES_COOLOFF_TIME = timedelta(seconds=2)
    client = Client()
    for _ in range(50):
        client.post(url, {"username": username, "password": "guess"})
    response = client.post(url, {"username": username, "password": PASSWORD})
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many attempts" in page
    assert "10 failed logins in a row for this account from your network address" in page
    assert "_auth_user_id" not in client.session

    # The owner at another address logs in: the pair (username, address) is locked, never
    # the username alone (before: refused too, so a stranger locked anyone out).
    owner = Client(REMOTE_ADDR="10.9.8.7")
    assert owner.post(url, {"username": username, "password": PASSWORD}).status_code == 302

    time.sleep(2.1)  # the cool-off is over: the right password works again
    response = client.post(url, {"username": username, "password": PASSWORD, "next": landing})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(
        (partner_user if username == "acme" else staff_user).pk
    )


def test_a_few_typos_do_not_lock_anyone_out(partner_user: Any) -> None:
    client = Client()
    for _ in range(9):
        client.post("/portal/login/", {"username": "acme", "password": "typo"})
    response = client.post("/portal/login/", {"username": "acme", "password": PASSWORD})
    assert response.status_code == 302
    for _ in range(9):  # a success starts the count again
        client.post("/portal/login/", {"username": "acme", "password": "typo"})
    assert (
        client.post("/portal/login/", {"username": "acme", "password": PASSWORD}).status_code == 302
    )


@pytest.mark.parametrize("address", ["acme@partner.test", "nobody@nowhere.test"])
def test_twenty_password_resets_send_five_e_mails_at_most(
    partner_user: Any, mailoutbox: Any, address: str
) -> None:
    client = Client()
    statuses = [
        client.post("/portal/password-reset/", {"email": address}).status_code for _ in range(20)
    ]
    # The same answers whether the address has an account or not.
    assert statuses == [302] * 5 + [429] * 15
    assert len(mailoutbox) == (5 if address == "acme@partner.test" else 0)
    page = client.post("/portal/password-reset/", {"email": address}).content.decode()
    # Before: "... for this address from your network, or from your network."
    assert (
        "<p>There were too many password reset requests from your network, for this e-mail"
        " address or for all addresses together. Try again in an hour; a link sent earlier"
        " still works.</p>"
    ) in page
    # Another address from another network is not held back by these.
    assert (
        Client(REMOTE_ADDR="10.1.2.3")
        .post("/portal/password-reset/", {"email": "other@partner.test"})
        .status_code
        == 302
    )


def test_one_address_failing_on_many_accounts_is_stopped_at_its_own_limit(
    partner_user: Any, staff_user: Any, settings: Any
) -> None:
    """A few guesses on each of many accounts from one address: past
    LOGIN_ADDRESS_FAILURE_LIMIT failures in all, that address's logins are refused (with
    the page saying why), while the same accounts still log in from elsewhere."""
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 15
    sprayer = Client(REMOTE_ADDR="10.6.6.6")
    statuses = [
        sprayer.post("/portal/login/", {"username": f"user{n}", "password": "guess"}).status_code
        for n in range(18)
    ]
    assert statuses[:14] == [200] * 14
    assert set(statuses[14:]) == {429}
    response = sprayer.post("/portal/login/", {"username": "acme", "password": PASSWORD})
    assert response.status_code == 429
    assert "15 failed logins from your network address" in response.content.decode()
    assert (
        Client(REMOTE_ADDR="10.1.1.1")
        .post("/portal/login/", {"username": "acme", "password": PASSWORD})
        .status_code
        == 302
    )


def test_a_success_resets_its_own_pair_only(
    partner_user: Any, staff_user: Any, settings: Any
) -> None:
    """An attacker holding one account cannot wipe its address's count by logging in: the
    other usernames stay paused from there (its own, known there now, is not)."""
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 6
    client = Client(REMOTE_ADDR="10.6.6.7")
    for n in range(5):
        client.post("/portal/login/", {"username": f"victim{n}", "password": "guess"})
    assert (
        client.post("/portal/login/", {"username": "acme", "password": PASSWORD}).status_code == 302
    )
    client.logout()
    client.post("/portal/login/", {"username": "victim99", "password": "guess"})
    for username in ("victim0", "victim99", "boss"):
        assert (
            client.post("/portal/login/", {"username": username, "password": PASSWORD}).status_code
            == 429
        ), username


def test_a_flood_from_the_owners_own_address_does_not_lock_the_owner_out(
    partner_user: Any, staff_user: Any, settings: Any
) -> None:
    """Before: LOGIN_ADDRESS_FAILURE_LIMIT failures from one address (a stranger behind the
    office's NAT address, trying many usernames) refused every login from it, its usual
    users' included. A username that logged in from that address within
    LOGIN_KNOWN_ADDRESS_DAYS is not paused by the address's limit (its pair's still
    holds); a username new to it is."""
    from axes.models import AccessLog

    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 15
    office = "10.4.4.4"
    owner = Client(REMOTE_ADDR=office)
    assert (
        owner.post("/portal/login/", {"username": "acme", "password": PASSWORD}).status_code == 302
    )
    owner.logout()
    stranger = Client(REMOTE_ADDR=office)
    statuses = [
        stranger.post("/portal/login/", {"username": f"user{n}", "password": "guess"}).status_code
        for n in range(18)
    ]
    assert set(statuses[15:]) == {429}
    # The owner, at their usual address: in.
    assert (
        owner.post("/portal/login/", {"username": "acme", "password": PASSWORD}).status_code == 302
    )
    owner.logout()
    # A username that never logged in from here, right password or not: paused.
    response = stranger.post("/portal/login/", {"username": "boss", "password": PASSWORD})
    assert response.status_code == 429
    assert "for accounts that have not logged in from it in the last 30 days" in (
        response.content.decode()
    )
    # The owner's own typos still count on the pair's limit, as anywhere.
    for _ in range(10):
        owner.post("/portal/login/", {"username": "acme", "password": "typo"})
    assert (
        owner.post("/portal/login/", {"username": "acme", "password": PASSWORD}).status_code == 429
    )
    # Known too long ago (or LOGIN_KNOWN_ADDRESS_DAYS=0): paused like any other username.
    from axes.models import AccessAttempt

    AccessAttempt.objects.filter(username="acme").delete()
    AccessLog.objects.update(attempt_time=timezone.now() - timedelta(days=31))
    assert (
        owner.post("/portal/login/", {"username": "acme", "password": PASSWORD}).status_code == 429
    )
    AccessLog.objects.update(attempt_time=timezone.now())
    settings.LOGIN_KNOWN_ADDRESS_DAYS = 0
    assert (
        owner.post("/portal/login/", {"username": "acme", "password": PASSWORD}).status_code == 429
    )


FULLWIDTH_ACME = "\uff41\uff43\uff4d\uff45"  # "acme" in fullwidth letters
CYRILLIC_A = "\u0430"


def test_a_fullwidth_spelling_counts_as_the_account_it_reaches(partner_user: Any) -> None:
    """Django's login form folds a fullwidth name to the account's (NFKC) before checking
    it, so guesses under it count on that account's pair."""
    from axes.models import AccessAttempt

    client = Client(REMOTE_ADDR="10.5.5.5")
    for _ in range(10):
        client.post("/portal/login/", {"username": FULLWIDTH_ACME, "password": "guess"})
    response = client.post("/portal/login/", {"username": "acme", "password": PASSWORD})
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("username", flat=True)) == {"acme"}


def test_other_spellings_cannot_log_in_and_odd_names_are_answered(
    partner_user: Any, settings: Any
) -> None:
    """Usernames are compared exactly (Django's): "Acme" or a Cyrillic lookalike is another,
    non-existent, account, so guessing under it can never open "acme". A 10,000-character
    name (before: 500, too long for the attempts' records) or one holding a NUL is answered
    with the form."""
    client = Client(REMOTE_ADDR="10.5.5.6")
    for typed in ("Acme", "ACME", f"{CYRILLIC_A}cme", "acme\u200b", "a" * 10_000, "ac\x00me"):
        response = client.post("/portal/login/", {"username": typed, "password": PASSWORD})
        assert response.status_code == 200, typed[:20]  # the form again: no such account
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        client.post("/portal/login/", {"username": "b" * 10_000, "password": "guess"})
    # Counted like any other name (under its first 255 characters), so throttled too.
    assert (
        client.post("/portal/login/", {"username": "b" * 10_000, "password": "x"}).status_code
        == 429
    )


def test_password_resets_are_counted_per_typed_address_and_client_address(
    partner_user: Any, mailoutbox: Any, settings: Any
) -> None:
    """A stranger using up the owner's resets (in any spelling Django's form takes for the
    same account) does not stop the owner at another address; one address asking for many
    accounts stops at PASSWORD_RESET_ADDRESS_RATE."""
    settings.PASSWORD_RESET_ADDRESS_RATE = "12/h"
    stranger = Client(REMOTE_ADDR="10.7.7.7")
    spellings = [
        "acme@partner.test",
        "ACME@Partner.TEST",
        " acme@partner.test",
        "Acme@partner.test",
    ]
    statuses = [
        stranger.post("/portal/password-reset/", {"email": spelling}).status_code
        for spelling in spellings * 2
    ]
    assert statuses == [302] * 5 + [429] * 3
    owner = Client(REMOTE_ADDR="10.8.8.8")
    assert owner.post("/portal/password-reset/", {"email": "acme@partner.test"}).status_code == 302
    assert len(mailoutbox) == 6
    # The stranger's address, asking for other addresses: its own limit, 12 an hour in all.
    others = [
        stranger.post("/portal/password-reset/", {"email": f"n{n}@x.test"}).status_code
        for n in range(6)
    ]
    assert others == [302] * 4 + [429] * 2


@pytest.mark.parametrize(
    ("meta", "counted"),
    [
        # From the proxy (FORWARDED_ALLOW_IPS: 127.0.0.1, ::1): the address it says.
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.7"}, "198.51.100.7"),
        ({"REMOTE_ADDR": "::1", "HTTP_X_REAL_IP": " 198.51.100.7 "}, "198.51.100.7"),
        ({"REMOTE_ADDR": "::ffff:127.0.0.1", "HTTP_X_REAL_IP": "198.51.100.7"}, "198.51.100.7"),
        # IPv6: counted as its /64, whatever address within it; IPv4-mapped as IPv4.
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "2001:db8:1:2:aaaa::1"}, "2001:db8:1:2::"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "2001:DB8:1:2::ffff"}, "2001:db8:1:2::"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "::ffff:203.0.113.9"}, "203.0.113.9"),
        ({"REMOTE_ADDR": "2001:db8:9:9:1:2:3:4"}, "2001:db8:9:9::"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "fe80::1%eth0"}, "fe80::"),
        # Not one address (a list, a port, a name, empty): the proxy's own address.
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "1.2.3.4, 5.6.7.8"}, "127.0.0.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "1.2.3.4:80"}, "127.0.0.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "localhost"}, "127.0.0.1"),
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": ""}, "127.0.0.1"),
        # Other headers are never read, from the proxy or not.
        (
            {
                "REMOTE_ADDR": "127.0.0.1",
                "HTTP_X_FORWARDED_FOR": "1.2.3.4",
                "HTTP_FORWARDED": "for=1.2.3.4",
                "HTTP_CLIENT_IP": "1.2.3.4",
            },
            "127.0.0.1",
        ),
        # From anyone else: its own address, whatever it says.
        ({"REMOTE_ADDR": "127.0.0.2", "HTTP_X_REAL_IP": "198.51.100.7"}, "127.0.0.2"),
        ({"REMOTE_ADDR": "203.0.113.5", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}, "203.0.113.5"),
        ({"REMOTE_ADDR": "2001:db8::5", "HTTP_X_REAL_IP": "198.51.100.7"}, "2001:db8::"),
        # A Unix socket (no peer address): only the proxy reaches it.
        ({"REMOTE_ADDR": "", "HTTP_X_REAL_IP": "198.51.100.7"}, "198.51.100.7"),
        ({"REMOTE_ADDR": ""}, ""),
    ],
)
def test_the_client_address_is_the_peer_or_what_a_trusted_proxy_says(
    meta: dict[str, str], counted: str
) -> None:
    from portal.auth import client_address_of

    assert client_address_of(meta) == counted


def test_trusted_proxies_are_addresses_networks_or_anyone(settings: Any) -> None:
    from portal.auth import client_address_of

    told = {"HTTP_X_REAL_IP": "198.51.100.7"}
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::1"]
    assert client_address_of({"REMOTE_ADDR": "10.20.30.40", **told}) == "198.51.100.7"
    assert client_address_of({"REMOTE_ADDR": "fd00::1", **told}) == "198.51.100.7"
    assert client_address_of({"REMOTE_ADDR": "127.0.0.1", **told}) == "127.0.0.1"
    settings.TRUSTED_PROXIES = []
    assert client_address_of({"REMOTE_ADDR": "127.0.0.1", **told}) == "127.0.0.1"
    settings.TRUSTED_PROXIES = ["*"]
    assert client_address_of({"REMOTE_ADDR": "192.0.2.1", **told}) == "198.51.100.7"


def test_the_retention_purge_prunes_old_login_records_and_keeps_recent_ones(
    partner_user: Any, settings: Any
) -> None:
    """django-axes logs every login; the daily purge keeps LOGIN_RECORDS_RETENTION_DAYS of
    them (never fewer than LOGIN_KNOWN_ADDRESS_DAYS, which reads them)."""

    settings.LOGIN_RECORDS_RETENTION_DAYS = 10
    settings.LOGIN_KNOWN_ADDRESS_DAYS = 30
    Client().post("/portal/login/", {"username": "acme", "password": "wrong"})
    Client().post("/portal/login/", {"username": "acme", "password": PASSWORD})
    assert AccessLog.objects.count() == 1
    for agent, days in (("old", 31), ("kept", 20)):
        record = AccessLog.objects.create(
            username="acme",
            ip_address="127.0.0.9",
            user_agent=agent,
            http_accept="*/*",
            path_info="/portal/login/",
        )
        # attempt_time is set on creation: backdate it.
        AccessLog.objects.filter(pk=record.pk).update(
            attempt_time=timezone.now() - timedelta(days=days)
        )

    out = io.StringIO()
    call_command("retention_purge", stdout=out)

    assert "1 login record older than 30 days pruned" in out.getvalue()
    kept = set(AccessLog.objects.values_list("user_agent", flat=True))
    assert "old" not in kept
    assert "kept" in kept
    assert len(kept) == 2
