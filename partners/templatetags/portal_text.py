"""Template filters of the portal's pages."""

from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from partners.receipts.workbook import text_visible

register = template.Library()


@register.filter
def visible(text: str) -> str:
    """A partner's line as the error workbook shows it: a tab as →, a control character as
    its symbol (a raw tab is an invisible gap on a page)."""
    return text_visible(str(text))


_JOINTS = re.compile(r"([_.])")


@register.filter
def breakable(name: str) -> SafeString:
    """A file name that may wrap after each ``_`` and ``.`` (a phone is narrower than
    ``ftp_dpm_1234_5678_1700000000.sync.gz``), rather than anywhere in a number."""
    return mark_safe(_JOINTS.sub(r"\1<wbr>", str(escape(name))))
