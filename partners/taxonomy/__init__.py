"""The taxonomy workbook (XLSX): partners, data sources, receipt recipients, traits, segments,
destinations and their segments, exported and imported as one workbook.

widgets.py (cells to values and back: pure) · resource.py (a sheet: read, validate with the
model's full_clean(), write, export) · sheets.py (the seven sheets, one resource each) ·
workbook.py (their order and references, permissions, the all-or-nothing import) ·
admin_views.py (the admin page).
"""

from partners.taxonomy.workbook import (
    SHEETS,
    TaxonomyImportError,
    TaxonomyImportResult,
    sheets_importable,
    sheets_viewable,
    taxonomy_export,
    taxonomy_import,
)

__all__ = [
    "SHEETS",
    "TaxonomyImportError",
    "TaxonomyImportResult",
    "sheets_importable",
    "sheets_viewable",
    "taxonomy_export",
    "taxonomy_import",
]
