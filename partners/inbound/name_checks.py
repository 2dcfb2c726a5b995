"""Whose a file is, from its name: the data sources it names exist, are active, and are the
partner's own (or shared with it). Registration and the portal's live name check run these
same checks, so a file is refused in the same words before and after its upload."""

from __future__ import annotations

from partners.inbound.errors import InboundRejected
from partners.inbound.names import FileKind, InboundFileName
from partners.models import DataSource, Partner


def _data_source(dpid: int, name: str) -> DataSource:
    source = DataSource.objects.select_related("partner").filter(dpid=dpid).first()
    if source is None:
        raise InboundRejected(name, f"DPID {dpid} is not a data source we know")
    if not source.active:
        raise InboundRejected(name, f"data source {dpid} is not active")
    return source


def _may_use(partner: Partner, source: DataSource) -> bool:
    return source.partner_id == partner.pk or source.shared_with.filter(pk=partner.pk).exists()


def traits_name_check(
    parsed: InboundFileName, partner: Partner | None
) -> tuple[Partner, DataSource, DataSource]:
    """The (partner, ID data source, target data source) of a trait file, or why not."""
    name = parsed.name
    ids = _data_source(parsed.dpid, name)
    if parsed.kind is FileKind.DEVICE_TRAITS:
        target = ids  # ftp_dpm_odc_<DPID>: the DPID is the target; IDs are idfa / gaid
    elif ids.is_global:
        if parsed.target_dpid is None:
            raise InboundRejected(
                name,
                f"DPID {parsed.dpid} is a global device data source: the name needs a target "
                f"DPID (ftp_dpm_{parsed.dpid}_<TARGET_DPID>_<TIMESTAMP>.sync)",
            )
        target = _data_source(parsed.target_dpid, name)
    else:
        target = _data_source(parsed.trait_dpid, name)
    if target.is_global:
        raise InboundRejected(name, f"the target DPID {target.dpid} is a global device data source")
    owner = partner or target.partner
    assert owner is not None
    if not _may_use(owner, target):
        raise InboundRejected(name, f"data source {target.dpid} belongs to another partner")
    if not ids.is_global and not _may_use(owner, ids):
        raise InboundRejected(name, f"data source {ids.dpid} belongs to another partner")
    return owner, ids, target


def idsync_name_check(
    parsed: InboundFileName, partner: Partner | None
) -> tuple[Partner, DataSource | None, DataSource]:
    name = parsed.name
    sources = [_data_source(dpid, name) for dpid in parsed.column_dpids if dpid != 0]
    mapped = [s for s in sources if not s.is_global]
    if not mapped:
        raise InboundRejected(name, "an ID-sync file maps at least one partner data source")
    owner = partner or mapped[-1].partner
    assert owner is not None
    for source in mapped:
        if not _may_use(owner, source):
            raise InboundRejected(name, f"data source {source.dpid} belongs to another partner")
    master = None if parsed.dpid == 0 else sources[0]
    return owner, master, mapped[-1]
