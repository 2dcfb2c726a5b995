"""Every admin page staff use, in a real headless browser at a laptop's 1366 px and a phone's
390 px, with the demo's data and its files processed: a list shows its last column without
scrolling sideways, and each help text reads as written (its <placeholders> included).
Full-page screenshots go to artifacts/admin-<page>-<width>.png."""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django_rq
import pytest
from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db.models import Model
from django.urls import reverse
from django.utils.translation import gettext
from rq import SimpleWorker

from partners.admin import ResendForm
from partners.admin_views import ReportForm
from partners.inbound.processing import inbound_batch_process
from partners.inbound.registration import inbound_files_register
from partners.models import Destination, IDSyncOptOut, InboundBatch, Receipt, ReceiptDelivery
from partners.outbound.runs import outbound_run
from partners.schedules import schedule_run
from portal.demo import demo_seed
from portal.demo_files import DAY1_FILE, IDSYNC_FILE, MISTAKES_FILE
from tests.conftest import queue_wipe

pytestmark = pytest.mark.django_db(transaction=True)
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
DEMO_DIR = Path(settings.BASE_DIR) / "demo"
WIDTHS = {1366: 900, 390: 844}
OURS = ("partners", "segments")  # the portal's apps (auth and axes are Django's own pages)
# The staff's add pages (the rest are derived rows, or Django's own).
ADDED = ("partner", "datasource", "trait", "segment", "inboundchannel", "destination")


@dataclass(frozen=True)
class AdminPage:
    name: str
    url: str
    help_texts: frozenset[str] | None  # every help text it may show, as written (None: Django's)
    changelist: bool = False


def _written(text: Any) -> str:
    """A help text as its author wrote it: Django renders help texts as HTML, so one with
    <placeholders> is escaped where it is defined; this undoes that (and only that)."""
    return " ".join(html.unescape(str(text)).split())


def _help_texts(
    *sources: type[Model] | type[forms.Form], extra: tuple[str, ...] = ()
) -> frozenset[str]:
    texts = set(extra)
    for source in sources:
        if issubclass(source, forms.Form):
            texts |= {str(f.help_text) for f in source.base_fields.values() if f.help_text}
        else:
            texts |= {str(getattr(f, "help_text", "")) for f in source._meta.get_fields()}
    texts.discard("")
    written = {_written(text) for text in texts}
    # The admin adds how to pick several to a multiple select's own help text.
    several = _written(
        gettext("Hold down “Control”, or “Command” on a Mac, to select more than one.")
    )
    return frozenset(written | {several} | {f"{text} {several}" for text in written})


def _admin_pages() -> list[AdminPage]:
    pages = [AdminPage("index", reverse("admin:index"), frozenset())]
    for model, model_admin in admin.site._registry.items():
        if not model._meta.managed:  # django-rq's dashboard: a page of its own, not a table
            continue
        opts = model._meta
        sources = (model, *(inline.model for inline in model_admin.inlines))
        texts = (
            _help_texts(*sources, extra=(str(model_admin.search_help_text or ""),))
            if opts.app_label in OURS
            else None  # Django's own (auth, axes): help texts with deliberate HTML
        )
        url = f"admin:{opts.app_label}_{opts.model_name}"
        prefix = f"{opts.app_label}-{opts.model_name}"
        pages.append(AdminPage(f"{prefix}-list", reverse(f"{url}_changelist"), texts, True))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            pages.append(
                AdminPage(f"{prefix}-change", reverse(f"{url}_change", args=[first.pk]), texts)
            )
        if opts.model_name in ADDED:
            pages.append(AdminPage(f"{prefix}-add", reverse(f"{url}_add"), texts))
    # Both kinds of receipt read differently: one page each.
    receipt_texts = _help_texts(Receipt, ReceiptDelivery)
    idsync = Receipt.objects.get(batch__kind=InboundBatch.Kind.ID_SYNC)
    mistakes = Receipt.objects.get(batch__files__name=MISTAKES_FILE)
    pages += [
        AdminPage(
            "partners-receipt-idsync-change",
            reverse("admin:partners_receipt_change", args=[idsync.pk]),
            receipt_texts,
        ),
        AdminPage(
            "partners-receipt-errors-change",
            reverse("admin:partners_receipt_change", args=[mistakes.pk]),
            receipt_texts,
        ),
        AdminPage(
            "partners-receipt-resend",
            reverse("admin:partners_receipt_resend", args=[mistakes.pk]),
            _help_texts(ResendForm),
        ),
        AdminPage("tools-schedules", reverse("admin:schedules"), frozenset()),
        AdminPage("tools-taxonomy", reverse("admin:taxonomy"), frozenset()),
        AdminPage(
            "tools-onboarding-report", reverse("admin:onboarding_report"), _help_texts(ReportForm)
        ),
    ]
    return pages


def _process(path: Path) -> Receipt:
    (batch,) = inbound_files_register(paths=[path]).batches
    return inbound_batch_process(batch_id=batch.pk)


@pytest.fixture
def demo_admin(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The demo's taxonomy and visitors, its sample files processed (receipts of both kinds,
    one with errors), a run of its destination, polls of its drop zone (a file rejected),
    a cross-device record waiting for its mapping, an opt-out, a group."""
    settings.PARTNER_SOLUTIONS_EMAILS = ["solutions@platform.test"]
    monkeypatch.setenv("DEMO_DROPZONE", str(tmp_path / "dropzone"))
    seed = demo_seed()
    for name in (IDSYNC_FILE, DAY1_FILE, MISTAKES_FILE):
        _process(DEMO_DIR / name)
    cross_device = tmp_path / "ftp_dpm_22_1764640900.sync"
    cross_device.write_text("acme-not-synced-yet\td_sid=90\n")
    _process(cross_device)
    outbound_run(destination=Destination.objects.get())
    (seed.dropzone_today / "acme_traits_export_final_v2.tsv").write_text("u1\td_sid=10\n")
    inbound = queue_wipe(django_rq.get_queue("inbound"))
    for _ in range(2):  # seen, then registered (here: rejected) once its size held
        schedule_run(name="inbound_poll")  # queues the channel's poll job, run here
        SimpleWorker([inbound], connection=inbound.connection).work(burst=True)
    IDSyncOptOut.objects.create(data_source_id=21, dpuuid="acme-0007")
    Group.objects.create(name="Partner solutions")
    yield
    # The jobs the data queued as it committed (receipt e-mails, membership rebuilds) name
    # rows the end of the test deletes: no later test's worker should take them.
    for name in settings.RQ_QUEUES:
        django_rq.get_queue(name).empty()


def _log_in(page: Any, base: str) -> None:
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "wrong-on-purpose")  # a failed attempt: axes' pages have a row
    page.click("input[type=submit]")
    page.fill("#id_password", "staff-demo-pass")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


# The last header cell of a list and whether the list scrolls sideways: at 1366 px every
# column must be on the screen (a list that scrolls hides its last columns off the right).
RESULTS_JS = """() => {
  const table = document.getElementById("result_list");
  if (!table) return null;
  const last = table.querySelector("thead th:last-child");
  const box = table.closest(".results") || table.parentElement;
  return {
    column: last.innerText.trim(),
    right: last.getBoundingClientRect().right,
    viewport: document.documentElement.clientWidth,
    scrollWidth: box.scrollWidth,
    clientWidth: box.clientWidth,
    pageScrolls: document.documentElement.scrollWidth > document.documentElement.clientWidth,
  };
}"""

# Each help text as the reader sees it: below a field, or a tabular inline's column tooltip.
HELP_JS = """() => [
  ...Array.from(
    document.querySelectorAll(
      "#content .form-row div.help, #content .helptext, #searchbar_helptext"
    ),
    (el) => el.innerText,
  ),
  ...Array.from(document.querySelectorAll("#content img.help-tooltip"), (el) => el.title),
]"""


def _problems(page: Any, target: AdminPage, width: int) -> list[str]:
    problems = []
    if width == 1366 and target.changelist:
        results = page.evaluate(RESULTS_JS)
        if results is not None:
            if results["right"] > results["viewport"] + 0.5:
                problems.append(
                    f"{target.name}: last column {results['column']!r} ends at"
                    f" {results['right']:.0f} px, past the {results['viewport']} px screen"
                )
            if results["scrollWidth"] > results["clientWidth"] + 1 or results["pageScrolls"]:
                problems.append(
                    f"{target.name}: the list scrolls sideways ({results['scrollWidth']} px"
                    f" of columns in {results['clientWidth']} px)"
                )
    if target.help_texts is None:
        return problems
    for shown in page.evaluate(HELP_JS):
        if " ".join(shown.split()) not in target.help_texts:
            problems.append(f"{target.name}: help text {shown!r} is not as written")
    return problems


@pytest.mark.parametrize("width", WIDTHS)
def test_every_admin_page_fits_the_screen_and_shows_its_help_as_written(
    demo_admin: None, page: Any, live_server: Any, width: int
) -> None:
    """Before (issue 16): at 1366 px eight of the portal's lists scrolled sideways, their
    last columns off the screen (data sources, ID mappings, inbound batches and files,
    channel objects, outbound runs, receipts, line errors), and at both widths the help
    texts of a partner's slug, a channel's prefix and credentials and a destination's folder
    read "//date=…", "':'" and "Under // in the channel"."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": width, "height": WIDTHS[width]})
    _log_in(page, live_server.url)
    targets = _admin_pages()
    problems: list[str] = []
    lists_with_rows = set()
    help_seen = 0
    for target in targets:
        response = page.goto(f"{live_server.url}{target.url}")
        assert response.status == 200, target
        if target.changelist and page.locator("#result_list").count():
            lists_with_rows.add(target.name)
        help_seen += len(page.evaluate(HELP_JS))
        problems += _problems(page, target, width)
        page.screenshot(path=str(ARTIFACTS / f"admin-{target.name}-{width}.png"), full_page=True)
    # The checks had something to check: the staff's lists have rows, pages have help texts.
    ours = {t.name for t in targets if t.changelist and t.name.split("-")[0] in OURS}
    assert ours <= lists_with_rows, ours - lists_with_rows
    assert help_seen > 50
    assert not problems, "\n".join(problems)
