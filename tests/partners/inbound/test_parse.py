"""Parse processes give exactly what the in-process parse gives (pure: no database)."""

from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor

from partners.inbound.matching import CatalogTrait, TraitCatalog
from partners.inbound.parse import (
    IDSource,
    LineContext,
    ParseTally,
    UserLineCounts,
    line_parse_pool,
    staged_line_text,
)
from segments.rules import parse_trait_rule


def _catalog() -> TraitCatalog:
    return TraitCatalog(
        target_dpid=21,
        traits=[
            CatalogTrait(10, 21, True, None),
            CatalogTrait(11, 21, True, parse_trait_rule("age >= 30")),
            CatalogTrait(90, 22, True, None),
        ],
    )


def _staged(content: bytes, pool: ProcessPoolExecutor | None) -> tuple[str, int, list[object]]:
    tally = ParseTally()
    context = LineContext(
        file_no=1,
        device_file=False,
        id_source=IDSource(21, "dpuuid", ""),
        device_sources={},
        overwrite=False,
    )
    text = "".join(
        staged_line_text(
            io.BytesIO(content),
            context=context,
            catalog=_catalog(),
            tally=tally,
            pool=pool,
            user_lines=UserLineCounts(),
        )
    )
    return text, tally.received, list(tally.errors)


def test_the_pool_parses_like_the_process() -> None:
    lines = []
    for n in range(60_000):  # ~1.3 MB: several blocks for the pool
        signals = ("d_sid=10", "age=31,d_sid=90", "zz=1", "d_sid=10,,x", "11:0")[n % 5]
        # (No user ID past the 200-lines limit: each parse process drops those it finds
        # over it, tests/partners/inbound/test_proportion.py shows the figures end the same.)
        lines.append(f"u{n % 701}\\x\t{signals}\n" if n % 1013 else "no tab\n")
    content = "".join(lines).encode()
    in_process = _staged(content, None)
    with line_parse_pool(_catalog(), processes=2) as pool:
        assert isinstance(pool, ProcessPoolExecutor)
        assert _staged(content, pool) == in_process
    text, received, errors = in_process
    assert received == 60_000
    assert text.count("\n") + len(errors) == 60_000
    assert "\\\\x" in text  # a backslash in a user ID is escaped for COPY
