"""portal/middleware.py: a NUL character in an address is answered 400, never 500."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client, RequestFactory

from partners.portal.api import api_token_rotate
from portal.middleware import NUL_REFUSED
from tests.partners.inbound.conftest import World
from tests.partners.portal.test_pages import _login


def _filter_parameters(user: User) -> list[tuple[str, str]]:
    """(changelist, parameter) of every list filter of every admin changelist: a field's
    (``status`` and ``status__exact``) or a filter class's own parameter."""
    found = []
    for model, model_admin in admin.site._registry.items():
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        request = RequestFactory().get(url)
        request.user = user
        for item in model_admin.get_list_filter(request):
            name = item[0] if isinstance(item, tuple) else item
            if isinstance(name, str):
                found += [(url, name), (url, f"{name}__exact")]
            else:  # a SimpleListFilter
                found.append((url, getattr(name, "parameter_name", "")))
    return found


@pytest.mark.django_db
def test_a_nul_in_any_admin_list_filter_or_search_answers_400(
    admin_client: Client, admin_user: User
) -> None:
    """Before: a NUL in a list filter's value (``?status__exact=%00``: 21 filters of 15
    changelists) reached PostgreSQL, which refuses NUL in text: 500."""
    admin_client.raise_request_exception = False
    parameters = _filter_parameters(admin_user)
    assert len(parameters) > 20
    answers = {}
    for url, parameter in [*parameters, ("/admin/partners/partner/", "q")]:
        for value in ("\x00", "a\x00b"):
            response = admin_client.get(url, {parameter: value})
            answers[url, parameter, value] = response.status_code
            if response.status_code == 400:
                assert NUL_REFUSED in response.content.decode()
    assert {key: status for key, status in answers.items() if status != 400} == {}
    # A NUL in a parameter's name, in the path, in the reports' choices: the same.
    for path in (
        "/admin/partners/inboundfile/?status__exact%00=x",
        "/admin/partners/partner/%00/change/",
        "/admin/tools/onboarding-report/?partner=%00",
    ):
        assert admin_client.get(path).status_code == 400, path
    # Without one, the pages are as before.
    assert admin_client.get("/admin/partners/inboundfile/", {"status__exact": "x"}).status_code in (
        200,
        302,
    )


@pytest.mark.django_db
def test_a_nul_in_the_portals_and_the_apis_parameters_answers_400() -> None:
    world = World()
    partner_client = _login(world.partner, "nul-reader")
    for path in (
        "/portal/files/?page=%00",
        "/portal/files/status.json?page=1%00",
        "/portal/reports/onboarding/?date_from=%00",
        "/portal/outbound/?since=%00",
        "/portal/upload/check-name.json?name=a%00b",
    ):
        response = partner_client.get(path)
        assert response.status_code == 400, path
        assert NUL_REFUSED in response.content.decode()
    token = api_token_rotate(partner=world.partner, by="test")
    answer = Client().get(
        "/api/v1/files?limit=1&cursor=%00", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 400
    assert answer.json() == {"errors": [{"msg": NUL_REFUSED, "field": "cursor"}]}


def test_the_nul_page_leads_back_to_the_page_without_its_query(admin_client: Client) -> None:
    """A staff member in an admin list is led back to that list, not to the partners'
    login."""
    page = admin_client.get("/admin/partners/inboundbatch/?status__exact=%00").content.decode()
    assert '<a href="/admin/partners/inboundbatch/">Open the page without it</a>' in page
    assert "/portal/login/" not in page
