"""The portal's report forms: the admin's, narrowed to the partner's own rows."""

from __future__ import annotations

from typing import Any

from django import forms

from partners.admin_views import ReportForm, days_range_check
from partners.models import Destination, Partner


class PartnerReportForm(ReportForm):
    """The onboarding report's form (the same days and checks as the admin's), offering
    the partner's own data sources only: another DPID is not a valid choice."""

    def __init__(self, *args: Any, partner: Partner, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["data_sources"]
        field.queryset = partner.data_sources.order_by("dpid")  # type: ignore[attr-defined]
        field.widget = forms.CheckboxSelectMultiple(choices=field.choices)  # type: ignore[attr-defined]
        field.help_text = "None ticked: all of them."


class OutboundHistoryForm(forms.Form):
    """SPEC §6's outbound history: a date range, and one of the partner's destinations or
    all of them."""

    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", widget=forms.DateInput(attrs={"type": "date"}))
    destination = forms.ModelChoiceField(
        queryset=Destination.objects.none(), required=False, empty_label="All of them"
    )

    def __init__(self, *args: Any, partner: Partner, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["destination"]
        field.queryset = Destination.objects.filter(partner=partner).order_by("name")  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        days_range_check(data.get("start"), data.get("end"))
        return data
