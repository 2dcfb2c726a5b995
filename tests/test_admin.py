from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.db.models import Model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from partners.inbound.processing import inbound_batch_process
from partners.inbound.registration import inbound_files_register
from partners.models import DataSource
from portal.admin_values import RowValuesMixin, set_row_values
from portal.demo import demo_workbook, workbook_bytes
from segments.models import Trait
from tests.factories import (
    IDMappingFactory,
    ProfileFactory,
    SegmentMembershipFactory,
    TraitFactory,
    realize,
)

pytestmark = pytest.mark.django_db

MODELS: list[type[Model]] = list(admin.site._registry)
VIEW_ONLY = {
    # django-axes: login attempts and their log are recorded, not typed
    "accessattempt",
    "accesslog",
    "accessfailurelog",
    "idmapping",
    "profile",
    "segmentmembership",
    "dashboard",
    "inboundbatch",
    "inboundfile",
    "receipt",
    "lineerror",
    "pendingrecord",
    "idsyncoptout",
    "channelobject",
    "schedulerun",
    "outboundrun",
}


def admin_url(model: type[Model], view: str, *args: object) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def populated(tmp_path: Path) -> None:
    """A little of everything, so changelists render real rows and computed columns."""
    trait = TraitFactory.create()
    profile = ProfileFactory.create()
    realize(profile, trait)
    IDMappingFactory.create(data_source=trait.data_source, profile=profile, dpuuid="known")
    SegmentMembershipFactory.create(profile=profile)
    trait.data_source.id_type = "cross_device"
    trait.data_source.save()
    path = tmp_path / f"ftp_dpm_{trait.data_source_id}_1700000000.sync"
    path.write_text(f"known\td_sid={trait.sid}\nlater\td_sid={trait.sid}\nbad line\n")
    inbound_batch_process(batch_id=inbound_files_register(paths=[path]).batches[0].pk)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.model_name)
def test_changelist_answers_for_staff(
    admin_client: Client, populated: None, model: type[Model]
) -> None:
    response = admin_client.get(admin_url(model, "changelist"))
    assert response.status_code == 200


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.model_name)
def test_add_form_answers_for_staff_unless_the_rows_are_derived(
    admin_client: Client, model: type[Model]
) -> None:
    response = admin_client.get(admin_url(model, "add"))
    expected = 403 if model._meta.model_name in VIEW_ONLY else 200
    assert response.status_code == expected


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.model_name)
def test_anonymous_users_are_sent_to_log_in(client: Client, model: type[Model]) -> None:
    for view in ("changelist", "add"):
        response = client.get(admin_url(model, view))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_change_pages_answer_for_staff(admin_client: Client, populated: None) -> None:
    for model in MODELS:
        if not model._meta.managed:  # django-rq's dashboard: a page, not a table
            continue
        obj = model._default_manager.first()
        if obj is None:
            continue
        response = admin_client.get(admin_url(model, "change", obj.pk))
        assert response.status_code == 200, model


def test_identifiers_are_read_only_after_creation(admin_client: Client) -> None:
    trait = TraitFactory.create(sid=4321)
    page = admin_client.get(admin_url(Trait, "change", trait.pk)).content.decode()
    assert 'name="sid"' not in page
    assert 'name="data_source"' not in page
    assert 'name="name"' in page
    add_page = admin_client.get(admin_url(Trait, "add")).content.decode()
    assert 'name="sid"' in add_page


def test_global_device_data_sources_cannot_be_deleted_or_retyped(admin_client: Client) -> None:
    gaid = DataSource.objects.get(dpid=20914)
    page = admin_client.get(admin_url(DataSource, "change", gaid.pk)).content.decode()
    assert 'name="inbound_id_type"' not in page
    assert 'name="name"' in page
    assert admin_client.get(admin_url(DataSource, "delete", gaid.pk)).status_code == 403


def test_trait_rule_error_is_shown_next_to_the_field(admin_client: Client) -> None:
    trait = TraitFactory.create()
    response = admin_client.post(
        admin_url(Trait, "add"),
        {
            "sid": 9001,
            "data_source": trait.data_source.pk,
            "name": "Bad",
            "kind": "onboarded",
            "rule": 'age > 30 ANDD x == "1"',
            "ttl_days": 120,
        },
    )
    assert response.status_code == 200
    assert "unexpected token &#x27;ANDD&#x27; at column 10" in response.content.decode()
    assert not Trait.objects.filter(sid=9001).exists()


def test_live_population_counts_only_unexpired_realizations(admin_client: Client) -> None:
    trait = TraitFactory.create(sid=77, ttl_days=30)
    realize(ProfileFactory.create(), trait)
    realize(ProfileFactory.create(), trait, timezone.now() - timedelta(days=29))
    realize(ProfileFactory.create(), trait, timezone.now() - timedelta(days=31))
    forever = TraitFactory.create(sid=78, ttl_days=0)
    realize(ProfileFactory.create(), forever, timezone.now() - timedelta(days=3000))
    response = admin_client.get(admin_url(Trait, "changelist"), {"o": "1"})
    rows = {row.sid: row._population for row in response.context["cl"].result_list}
    assert rows[77] == 2
    assert rows[78] == 1


def test_data_source_mapping_count(admin_client: Client) -> None:
    mapping = IDMappingFactory.create()
    IDMappingFactory.create(data_source=mapping.data_source)
    response = admin_client.get(admin_url(DataSource, "changelist"))
    counts = {row.dpid: row._mapping_count for row in response.context["cl"].result_list}
    assert counts[mapping.data_source.dpid] == 2
    assert counts[20914] == 0


def test_data_source_pages_count_pending_cross_device_records(admin_client: Client) -> None:
    """Records waiting for their ID mapping are counted on the data source's page and in the
    list (one annotated query: no query per row), and the count links to them."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from partners.models import PendingRecord
    from tests.factories import DataSourceFactory, InboundBatchFactory

    waiting = DataSourceFactory.create(dpid=61, id_type=DataSource.IDType.CROSS_DEVICE)
    other = DataSourceFactory.create(dpid=62, id_type=DataSource.IDType.CROSS_DEVICE)
    DataSourceFactory.create(dpid=63)
    batch = InboundBatchFactory.create(partner=waiting.partner, target=waiting)
    for source, dpuuids in ((waiting, ["a", "b", "c"]), (other, ["z"])):
        for dpuuid in dpuuids:
            PendingRecord.objects.create(
                data_source=source,
                dpuuid=dpuuid,
                target=source,
                adds=[10],
                realized_at=timezone.now(),
                batch=batch,
            )

    with CaptureQueriesContext(connection) as queries:
        listing = admin_client.get(admin_url(DataSource, "changelist"))
    counts = {row.dpid: row._pending_count for row in listing.context["cl"].result_list}
    assert (counts[61], counts[62], counts[63], counts[20914]) == (3, 1, 0, 0)
    assert "pending cross-device records" in listing.content.decode().lower()
    rows_read = [q["sql"] for q in queries if "partners_pendingrecord" in q["sql"]]
    assert len(rows_read) == 1  # the list's own query, whatever the number of rows

    page = admin_client.get(admin_url(DataSource, "change", 61)).content.decode()
    field = page.split("field-pending_count")[1].split("</div>\n")[0]
    link = f"{admin_url(PendingRecord, 'changelist')}?data_source__dpid__exact=61"
    assert f'<a href="{link}">3</a>' in field
    shown = admin_client.get(link)
    assert {r.dpuuid for r in shown.context["cl"].result_list} == {"a", "b", "c"}


@pytest.mark.parametrize(
    "model_admin",
    [a for a in admin.site._registry.values() if isinstance(a, RowValuesMixin)],
    ids=lambda a: type(a).__name__,
)
def test_values_computed_per_shown_row_agree_both_ways(model_admin: Any, populated: None) -> None:
    """A column read by annotation (plain PostgreSQL, sortable) and read after the page is
    cut (Citus) is one number: both ways give the same value for every row."""
    SegmentMembershipFactory.create()  # a segment with a member (the batch may have left one)
    rows = list(model_admin.model._default_manager.all())
    assert rows
    annotated = model_admin.model._default_manager.annotate(
        **{name: value.expression() for name, value in model_admin.row_values.items()}
    )
    expected = {
        row.pk: {name: getattr(row, name) for name in model_admin.row_values} for row in annotated
    }
    set_row_values(model_admin.row_values, rows)
    found = {row.pk: {name: getattr(row, name) for name in model_admin.row_values} for row in rows}
    assert found == expected
    assert any(any(values.values()) for values in found.values())  # not only zeros


def test_taxonomy_page_exports_and_imports(admin_client: Client) -> None:
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:taxonomy") in index

    response = admin_client.post(
        reverse("admin:taxonomy"), {"workbook": _upload(demo_workbook().getvalue())}, follow=True
    )
    assert "Taxonomy imported. Partners: 1 created" in response.content.decode()

    exported = admin_client.get(reverse("admin:taxonomy_export"))
    assert exported["Content-Disposition"].startswith('attachment; filename="taxonomy-')
    book = load_workbook(io.BytesIO(exported.content), read_only=True)
    assert book.sheetnames == [
        "Partners",
        "DataSources",
        "ReceiptRecipients",
        "Traits",
        "Segments",
        "Destinations",
        "DestinationSegments",
    ]


def test_taxonomy_page_lists_every_problem(admin_client: Client) -> None:
    bad = workbook_bytes({"Partners": [["pid", "slug", "name"], [0, "ok", "A"], [2, "b!", "B"]]})
    response = admin_client.post(reverse("admin:taxonomy"), {"workbook": _upload(bad.getvalue())})
    page = response.content.decode()
    assert "2 problems. Nothing was changed." in page
    assert "Partners!A2: an ID must be a positive whole number" in page
    assert "Partners!B3: Enter a valid “slug”" in page


def test_taxonomy_page_needs_staff(client: Client) -> None:
    response = client.get(reverse("admin:taxonomy"))
    assert response.status_code == 302


def _upload(content: bytes) -> io.BytesIO:
    upload = io.BytesIO(content)
    upload.name = "taxonomy.xlsx"
    return upload


def _staff_with(*codenames: str) -> Client:
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("+".join(codenames), password="pw-limited-1", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def test_the_taxonomy_workbook_holds_only_what_the_user_may_view_and_change(
    admin_client: Client,
) -> None:
    """Before: a staff user with only 'view trait' exported every partner's contacts,
    recipients and destinations, and changed destinations by import."""
    admin_client.post(reverse("admin:taxonomy"), {"workbook": _upload(demo_workbook().getvalue())})
    viewer = _staff_with("view_trait")
    exported = viewer.get(reverse("admin:taxonomy_export"))
    assert load_workbook(io.BytesIO(exported.content), read_only=True).sheetnames == ["Traits"]
    page = viewer.get(reverse("admin:taxonomy")).content.decode()
    assert "the workbook holds: Traits." in page
    assert "Import workbook" not in page
    # Posting all the same changes nothing.
    destinations = workbook_bytes({"Destinations": [["id", "name"], [1, "Hijacked"]]})
    viewer.post(reverse("admin:taxonomy"), {"workbook": _upload(destinations.getvalue())})
    from partners.models import Destination

    assert not Destination.objects.filter(name="Hijacked").exists()

    editor = _staff_with("view_trait", "add_trait", "change_trait")
    page = editor.post(
        reverse("admin:taxonomy"), {"workbook": _upload(destinations.getvalue())}
    ).content.decode()
    assert "Destinations!A1: you may not add or change destinations" in page
    assert not Destination.objects.filter(name="Hijacked").exists()
    traits = workbook_bytes(
        {
            "Traits": [
                ["sid", "dpid", "name", "kind"],
                [10, 21, "Renamed by the editor", "onboarded"],
            ]
        }
    )
    response = editor.post(
        reverse("admin:taxonomy"), {"workbook": _upload(traits.getvalue())}, follow=True
    )
    page = response.content.decode()
    assert "Taxonomy imported" in page, page[page.find("taxonomy-errors") :][:600]
    assert Trait.objects.get(sid=10).name == "Renamed by the editor"


def _help_texts() -> list[tuple[str, str]]:
    """Every help text of the portal's models and admin forms, with where it is defined."""
    from django.apps import apps

    from partners.admin import ResendForm
    from partners.admin_views import ReportForm

    texts = [
        (f"{model.__name__}.{field.name}", str(getattr(field, "help_text", "")))
        for app in ("partners", "segments")
        for model in apps.get_app_config(app).get_models()
        for field in model._meta.get_fields()
        if getattr(field, "help_text", "")
    ]
    texts += [
        (f"{form.__name__}.{name}", str(field.help_text))
        for form in (ResendForm, ReportForm)
        for name, field in form.base_fields.items()
        if field.help_text
    ]
    return texts


def test_every_help_text_reads_as_written_once_rendered_as_html() -> None:
    """Django puts help texts into pages as HTML: one with <placeholders> must be escaped
    where it is defined. Before: the partner's slug read "drop-zone paths: //date=…"."""
    import html

    from django.utils.html import strip_tags

    texts = _help_texts()
    assert len(texts) > 30
    # What a browser shows (the tags dropped, the entities read) is the text as written.
    lost = {
        where: text
        for where, text in texts
        if html.unescape(strip_tags(text)) != html.unescape(text) or "<" in text
    }
    assert lost == {}


def test_a_placeholder_in_a_help_text_shows_on_the_admin_page(admin_client: Client) -> None:
    from partners.models import Partner

    page = admin_client.get(admin_url(Partner, "add")).content.decode()
    assert "drop-zone paths: &lt;prefix&gt;/&lt;slug&gt;/date=…" in page


def _queued_rows(model_name: str, count: int) -> list[int]:
    """``count`` rows an admin action queues work for (its job reaches Redis only when the
    request's transaction commits, which a test's never does)."""
    from partners.models import Destination, InboundChannel, OutboundRun
    from tests.factories import PartnerFactory, ReceiptFactory

    partner = PartnerFactory.create()
    rows: list[Model] = []
    for n in range(count):
        if model_name == "receipt":
            rows.append(ReceiptFactory.create())
            continue
        channel = InboundChannel.objects.create(
            partner=partner, name=f"zone {n}", kind="local", prefix="/srv/dropzone"
        )
        if model_name == "inboundchannel":
            rows.append(channel)
            continue
        destination = Destination.objects.create(partner=partner, name=f"d{n}", channel=channel)
        if model_name == "destination":
            rows.append(destination)
            continue
        rows.append(
            OutboundRun.objects.create(
                destination=destination, mode="full", started_at=timezone.now()
            )
        )
    return [row.pk for row in rows]


@pytest.mark.parametrize(
    ("model_name", "action", "one", "three"),
    [
        ("destination", "run_now", "1 destination queued.", "3 destinations queued."),
        (
            "inboundchannel",
            "poll_now",
            "1 drop zone queued for a poll.",
            "3 drop zones queued for a poll.",
        ),
        (
            "outboundrun",
            "resend",
            "1 run queued to be sent again.",
            "3 runs queued to be sent again.",
        ),
        ("receipt", "resend_to_all", "1 receipt queued.", "3 receipts queued."),
    ],
)
def test_action_messages_read_as_english(
    admin_client: Client, model_name: str, action: str, one: str, three: str
) -> None:
    """Before: "1 destination(s) queued."."""
    url = reverse(f"admin:partners_{model_name}_changelist")
    for count, expected in ((1, one), (3, three)):
        response = admin_client.post(
            url,
            {"action": action, "_selected_action": _queued_rows(model_name, count)},
            follow=True,
        )
        assert [str(m) for m in response.context["messages"]] == [expected]


def test_list_columns_wrap_names_at_their_separators_and_dates_between_day_and_time() -> None:
    from datetime import UTC, datetime

    from portal.admin_site import breakable, when

    assert breakable("<b>acme/date=2026-12-02/ftp_dpm_21.sync") == (
        "&lt;b&gt;acme/<wbr>date=2026-12-02/<wbr>ftp_<wbr>dpm_<wbr>21.<wbr>sync"
    )  # escaped first: a partner's file name is never markup
    assert when(datetime(2026, 12, 2, 16, 39, 5, tzinfo=UTC)) == (
        '<span class="day">2026-12-02</span> 16:39'
    )
    assert when(None) is None  # the admin's empty value


def test_a_partner_s_page_links_its_last_batch(admin_client: Client) -> None:
    """Before: "Last batch: -" whatever the partner sent (the date's format raised, and the
    admin shows a failing field as empty)."""
    from datetime import UTC, datetime

    from partners.models import Partner, Receipt
    from tests.factories import ReceiptFactory

    receipt: Receipt = ReceiptFactory.create(
        job_start=datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
        job_end=datetime(2026, 11, 20, 9, 31, tzinfo=UTC),
        stored_records=40,
        format_errors=2,
    )
    page = admin_client.get(admin_url(Partner, "change", receipt.batch.partner_id))
    field = page.content.decode().split("field-last_batch")[1].split("</div>\n")[0]
    link = admin_url(Receipt, "change", receipt.pk)
    assert (
        f'<a href="{link}">{receipt.batch.key}</a> — 2026-11-20 09:31 UTC, 40 of 42 records'
        " stored" in field
    )
