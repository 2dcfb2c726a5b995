"""Template filters of the portal's pages."""

from __future__ import annotations

from django import template

from partners.receipts.workbook import text_visible

register = template.Library()


@register.filter
def visible(text: str) -> str:
    """A partner's line as the error workbook shows it: a tab as →, a control character as
    its symbol (a raw tab is an invisible gap on a page)."""
    return text_visible(str(text))
