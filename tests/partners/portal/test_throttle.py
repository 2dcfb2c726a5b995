"""Guessing is slow: logins (portal and admin) and password resets are throttled."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

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
    assert "10 failed logins in a row" in page
    assert "_auth_user_id" not in client.session

    # Another address is refused too: the username itself is locked.
    other = Client(REMOTE_ADDR="10.9.8.7")
    assert other.post(url, {"username": username, "password": PASSWORD}).status_code == 429

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
    assert "too many password reset requests" in page
    # Another address from another network is not held back by these.
    assert (
        Client(REMOTE_ADDR="10.1.2.3")
        .post("/portal/password-reset/", {"email": "other@partner.test"})
        .status_code
        == 302
    )
