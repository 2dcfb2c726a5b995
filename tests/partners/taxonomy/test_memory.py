"""The web process's memory returns to normal after a taxonomy import (issue 22), measured
in a real gunicorn worker of the portal pool (DEBUG off): its RSS after a small import, then
after a big refused import (every row read and checked, 2 problems a row) and a big accepted
one, and its peaks. ``S2S_TAXONOMY_MEMORY_ROWS`` sets the big imports' rows (20,000 by
default; the README's figures are for 100,000, the default TAXONOMY_MAX_ROWS)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User

from portal.demo import demo_workbook
from segments.models import Trait
from tests.partners.taxonomy.test_limits import traits_workbook
from tests.test_production_web import Gunicorn, _environment

ROWS = int(os.environ.get("S2S_TAXONOMY_MEMORY_ROWS", "20000"))
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _memory(pid: int) -> tuple[int, int]:
    """RSS and its high-water mark, in MB, of process ``pid``."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def _worker(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.fixture
def portal(settings: Any, tmp_path: Path) -> Iterator[Gunicorn]:
    env = _environment(
        settings, MEDIA_ROOT=str(tmp_path / "media"), WEB_WORKERS="1", WEB_THREADS="1"
    )
    server = Gunicorn("portal.wsgi", env)
    yield server
    server.stop()


def _import(session: requests.Session, base: str, workbook: bytes) -> str:
    page = session.get(f"{base}/admin/tools/taxonomy/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, page.text[:500]
    answer = session.post(
        f"{base}/admin/tools/taxonomy/",
        data={"csrfmiddlewaretoken": token.group(1)},
        files={"workbook": ("taxonomy.xlsx", workbook, XLSX)},
        headers={"Referer": f"{base}/admin/tools/taxonomy/"},
        timeout=600,
    )
    assert answer.status_code == 200, answer.text[:500]
    return answer.text


@pytest.mark.django_db(transaction=True)
def test_the_web_process_returns_to_its_size_after_big_imports(portal: Gunicorn) -> None:
    User.objects.create_superuser("root", "root@example.com", "a-long-staff-pass-1")
    base = f"http://127.0.0.1:{portal.port}"
    session = requests.Session()
    login = session.get(f"{base}/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
    assert token
    session.post(
        f"{base}/admin/login/",
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": "root",
            "password": "a-long-staff-pass-1",
            "next": "/admin/",
        },
        headers={"Referer": f"{base}/admin/login/"},
    )
    worker = _worker(portal.process.pid)
    # Warm: every module and lazy cache an import and a refusal use is loaded.
    assert "Taxonomy imported" in _import(session, base, demo_workbook().getvalue())
    assert "Nothing was changed" in _import(
        session, base, traits_workbook(200, bad=True).getvalue()
    )
    assert "Taxonomy imported" in _import(session, base, traits_workbook(200).getvalue())
    baseline, _ = _memory(worker)

    refused_page = _import(session, base, traits_workbook(ROWS, bad=True).getvalue())
    assert f"{2 * ROWS:,} problems. Nothing was changed." in refused_page
    after_refused, peak_refused = _memory(worker)

    accepted_page = _import(session, base, traits_workbook(ROWS).getvalue())
    assert "Taxonomy imported" in accepted_page
    assert Trait.objects.filter(data_source_id=5001).count() == ROWS
    after_accepted, peak = _memory(worker)
    print(
        f"\ngunicorn worker RSS: {baseline} MB after a small import; {ROWS:,} rows refused"
        f" (2 problems a row): peak {peak_refused} MB, after {after_refused} MB; {ROWS:,} rows"
        f" imported: peak {peak} MB, after {after_accepted} MB"
    )
    # Back to within a few MB of where it was (the peaks are far above).
    assert after_refused <= baseline + 15
    assert after_accepted <= baseline + 15
