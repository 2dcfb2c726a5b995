"""The staff's taxonomy page, driven in a real headless browser against a live server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from openpyxl import load_workbook

from partners.models import Partner
from portal.demo import demo_workbook, workbook_bytes
from segments.models import Trait

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff_page(page: Any, live_server: Any) -> Any:
    get_user_model().objects.create_superuser("boss", "boss@example.com", "a-long-pass-123")
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "a-long-pass-123")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    return page


def test_staff_import_a_workbook_see_every_problem_then_export(
    staff_page: Any, live_server: Any, tmp_path: Path
) -> None:
    page = staff_page
    page.click("text=Taxonomy workbook (XLSX import / export)")
    page.wait_for_selector("h1:has-text('Taxonomy workbook')")

    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(
        workbook_bytes(
            {
                "Traits": [
                    ["sid", "dpid", "name", "kind", "rule"],
                    [1, 99, "x", "onboarded", "a =~ 1"],
                ]
            }
        ).getvalue()
    )
    page.set_input_files("#id_workbook", str(bad))
    page.click("input[value='Import workbook']")
    errors = page.locator("#taxonomy-errors li").all_inner_texts()
    assert errors == [
        "Traits!B2: unknown data source DPID 99",
        "Traits!E2: unknown operator '=~' at column 3",
    ]
    assert "Nothing was changed" in page.inner_text(".errornote")
    assert not Trait.objects.exists()

    good = tmp_path / "taxonomy.xlsx"
    good.write_bytes(demo_workbook().getvalue())
    page.set_input_files("#id_workbook", str(good))
    page.click("input[value='Import workbook']")
    page.wait_for_selector(".messagelist")
    assert "Taxonomy imported. Partners: 1 created" in page.inner_text(".messagelist")
    assert Partner.objects.get(pid=1001).name == "Acme Data"

    with page.expect_download() as download_info:
        page.click("text=Download the taxonomy workbook")
    exported = tmp_path / "exported.xlsx"
    download_info.value.save_as(exported)
    book = load_workbook(exported, read_only=True)
    assert [row[0] for row in book["Traits"].iter_rows(min_row=2, values_only=True)] == [
        10,
        11,
        12,
        13,
        90,
    ]


def test_a_bad_trait_rule_is_shown_next_to_the_field(staff_page: Any, live_server: Any) -> None:
    Partner.objects.create(pid=5, slug="five", name="Five")
    from partners.models import DataSource

    DataSource.objects.create(
        dpid=50, partner_id=5, name="Five web", id_type="cookie", inbound_id_type="dpuuid"
    )
    page = staff_page
    page.goto(f"{live_server.url}/admin/segments/trait/add/")
    page.fill("#id_sid", "77")
    # The data source is an autocomplete: type, then pick the suggestion.
    page.click(".field-data_source .select2-selection")
    page.fill(".select2-search__field", "Five")
    page.click(".select2-results__option:has-text('Five web')")
    page.fill("#id_name", "Bad rule")
    page.fill("#id_rule", "age > 30 ANDD x == 1")
    page.click("input[name=_save]")
    error = page.locator(".field-rule .errorlist").inner_text()
    assert error == "unexpected token 'ANDD' at column 10"
    assert not Trait.objects.filter(sid=77).exists()


ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def test_onboarding_report_chart_click_a_day_see_its_table(
    staff_page: Any, live_server: Any
) -> None:
    from tests.partners.test_reports import seed_week

    seed_week()
    page = staff_page
    page.click("text=Onboarding status report")
    page.fill("#id_start", "2026-11-16")
    page.fill("#id_end", "2026-11-22")
    page.click("input[value='Show']")
    page.wait_for_function("window.reportChart !== undefined")
    chart = page.evaluate(
        "() => ({labels: reportChart.data.labels, stored: reportChart.data.datasets[0].data,"
        " failed: reportChart.data.datasets[1].data, width: reportChart.width})"
    )
    assert chart["labels"][0] == "2026-11-16"
    assert len(chart["labels"]) == 7
    assert chart["stored"][2] == 500  # Wednesday: only DPID 32 sent
    assert chart["width"] > 300  # drawn on the page
    assert page.locator("#report-table tbody tr:visible").count() == 13

    # Click Wednesday's bar where Chart.js drew it.
    x, y = page.evaluate(
        "() => { const bar = reportChart.getDatasetMeta(0).data[2];"
        " const box = reportChart.canvas.getBoundingClientRect();"
        " return [box.left + bar.x, box.top + (bar.y + bar.base) / 2]; }"
    )
    page.mouse.click(x, y)
    page.wait_for_selector("#report-table-title:has-text('Day 2026-11-18')")
    visible = page.locator("#report-table tbody tr:visible")
    assert visible.count() == 1
    assert visible.first.inner_text().startswith("2026-11-18\t32")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "onboarding-report.png"), full_page=True)

    page.click("#report-show-all")
    assert page.locator("#report-table tbody tr:visible").count() == 13


def test_a_refused_big_workbook_lists_its_first_problems_then_counts(
    staff_page: Any, tmp_path: Path
) -> None:
    """Issue 22: 2,000 problems are 200 lines and '… and 1,800 more', at 1366 and 390 px."""
    from tests.partners.taxonomy.test_limits import traits_workbook

    page = staff_page
    page.click("text=Taxonomy workbook (XLSX import / export)")
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(traits_workbook(1000, bad=True).getvalue())
    page.set_input_files("#id_workbook", str(bad))
    page.click("input[value='Import workbook']")
    page.wait_for_selector("#taxonomy-errors")
    errors = page.locator("#taxonomy-errors li").all_inner_texts()
    assert len(errors) == 201
    assert errors[-1] == "… and 1,800 more"
    assert "2,000 problems. Nothing was changed." in page.inner_text(".errornote")
    artifacts = Path(__file__).resolve().parents[1] / "artifacts"
    artifacts.mkdir(exist_ok=True)
    for width, height in ((1366, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(artifacts / f"admin-taxonomy-refused-{width}.png"))
        page.locator("#taxonomy-errors li").last.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / f"admin-taxonomy-refused-{width}-end.png"))
        page.evaluate("window.scrollTo(0, 0)")
        wide = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        assert not wide, width
