"""The inbound file-name grammar (SPEC §2.2 and §3.1), as a table: every element a name can
hold, and every refusal with the message the partner reads."""

# ruff: noqa: E501  (a table: each name and its message on one line, to read down the column)

from __future__ import annotations

import pytest

from partners.inbound.names import (
    Compression,
    FileKind,
    FileNameError,
    InboundFileName,
    parse_inbound_file_name,
    parts_missing,
)

T, D, S = FileKind.TRAITS, FileKind.DEVICE_TRAITS, FileKind.ID_SYNC
NONE, GZ, PGP = Compression.NONE, Compression.GZIP, Compression.PGP

# name -> (kind, dpid, target, columns, timestamp, overwrite, split, compression, batch key)
ACCEPTED = {
    "ftp_dpm_21_1700000000.sync": (T, 21, None, (), 1700000000, False, None, NONE, None),
    "ftp_dpm_21_1700000000.overwrite": (T, 21, None, (), 1700000000, True, None, NONE, None),
    "ftp_dpm_21_1700000000.sync.gz": (T, 21, None, (), 1700000000, False, None, GZ, None),
    "ftp_dpm_21_1700000000.sync.pgp": (T, 21, None, (), 1700000000, False, None, PGP, None),
    "ftp_dpm_21_1700000000.sync.gpg": (T, 21, None, (), 1700000000, False, None, PGP, None),
    "ftp_dpm_21_1700000000.sync.3": (
        T, 21, None, (), 1700000000, False, 3, NONE, "ftp_dpm_21_1700000000.sync"
    ),
    "ftp_dpm_21_1700000000.overwrite.0.gz": (
        T, 21, None, (), 1700000000, True, 0, GZ, "ftp_dpm_21_1700000000.overwrite"
    ),
    "ftp_dpm_21_1700000000.sync.9999.pgp": (T, 21, None, (), 1700000000, False, 9999, PGP, None),
    "ftp_dpm_20914_21_1700000000.sync": (T, 20914, 21, (), 1700000000, False, None, NONE, None),
    "ftp_dpm_2147483647_1700000000.sync": (
        T, 2147483647, None, (), 1700000000, False, None, NONE, None
    ),
    "ftp_dpm_odc_12345_1556223815.sync": (D, 12345, None, (), 1556223815, False, None, NONE, None),
    "ftp_dpm_odc_12345_1556223815.sync.2.gz": (D, 12345, None, (), 1556223815, False, 2, GZ, None),
    "adobe_id_0_12345_1476312152.sync": (S, 0, None, (0, 12345), 1476312152, False, None, NONE, None),
    "adobe_id_12345_67890_1477846458.sync.gz": (
        S, 12345, None, (12345, 67890), 1477846458, False, None, GZ, None
    ),
    "adobe_id_0_1_2_3_1477846458.sync.1": (
        S, 0, None, (0, 1, 2, 3), 1477846458, False, 1, NONE, None
    ),
    "c2c_id_999999_987654_1560431657.sync": (
        S, 999999, None, (999999, 987654), 1560431657, False, None, NONE, None
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", ACCEPTED)
def test_every_element_of_an_accepted_name(name: str) -> None:
    kind, dpid, target, columns, timestamp, overwrite, split, compression, key = ACCEPTED[name]
    parsed = parse_inbound_file_name(name)
    assert parsed == InboundFileName(
        name=name,
        kind=kind,
        dpid=dpid,
        target_dpid=target,
        column_dpids=columns,
        timestamp=timestamp,
        overwrite=overwrite,
        split=split,
        compression=compression,
    )
    assert parsed.batch_key == (
        key or name.split(".", 1)[0] + (".overwrite" if overwrite else ".sync")
    )
    assert parsed.trait_dpid == (target if target is not None else dpid)


REFUSED = {
    # Not even text we can keep.
    "ftp_dpm_21_17000\udcff00000.sync": "the name is not UTF-8 text (byte 0xff): rename the file",
    "ftp_dpm_21_\ud8001700000000.sync": "the name is not UTF-8 text (at character 12): rename the file",
    "ftp_dpm_21_1700000000\x00.sync": "the name holds a control character (U+0000)",
    "ftp_dpm_21_1700000000.sync\x1b[2J": "the name holds a control character (U+001B)",
    "ftp_dpm_21_1700000000.sync\x85": "the name holds a control character (U+0085)",
    "ftp_dpm_" + "1" * 250 + "_1700000000.sync": "the name is longer than 255 characters",
    # Paths and prefixes.
    "../ftp_dpm_21_1700000000.sync": "'../ftp_dpm_21_1700000000.sync' is a path, not a file name",
    "acme\\ftp_dpm_21_1700000000.sync": "'acme\\ftp_dpm_21_1700000000.sync' is a path, not a file name",
    "": "'' does not start with ftp_dpm_, ftp_dpm_odc_, adobe_id_ or c2c_id_",
    "=HYPERLINK(1).sync": "'=HYPERLINK(1).sync' does not start with ftp_dpm_, ftp_dpm_odc_, adobe_id_ or c2c_id_",
    "FTP_DPM_21_1700000000.sync": "'FTP_DPM_21_1700000000.sync' does not start with ftp_dpm_, ftp_dpm_odc_, adobe_id_ or c2c_id_",
    # Extensions.
    "ftp_dpm_21_1700000000": "'ftp_dpm_21_1700000000' has no .sync or .overwrite extension",
    "ftp_dpm_21_1700000000.tsv": "'.tsv' is not .sync or .overwrite",
    "ftp_dpm_21_1700000000.SYNC": "'.SYNC' is not .sync or .overwrite",
    "ftp_dpm_odc_12345_1556223815.overwrite": "'.overwrite' is not allowed for ftp_dpm_odc_… files (only .sync)",
    "adobe_id_0_21_1700000000.overwrite": "'.overwrite' is not allowed for adobe_id_… files (only .sync)",
    "ftp_dpm_21_1700000000.sync.10000": "part number 10000 is too large (at most 9999)",
    "ftp_dpm_21_1700000000.sync.99999999999999999999": "part number 99999999999999999999 is too large (at most 9999)",
    "ftp_dpm_21_1700000000.sync.zip": "'.zip' is not a part number, .gz, .pgp or .gpg",
    "ftp_dpm_21_1700000000.sync.-1": "'.-1' is not a part number, .gz, .pgp or .gpg",
    "adobe_id_0_21_1700000000.sync.pgp": "ID-sync files may be .gz, not PGP-encrypted",
    "ftp_dpm_21_1700000000.sync.gz.pgp": "gzip and PGP together are not allowed (PGP already compresses)",
    "ftp_dpm_21_1700000000.sync.pgp.gz": "gzip and PGP together are not allowed (PGP already compresses)",
    "ftp_dpm_21_1700000000.sync.gz.gz": "unexpected '.gz' after '.gz'",
    "ftp_dpm_21_1700000000.sync.1.gz.x": "unexpected '.x' after '.gz'",
    # The timestamp.
    "ftp_dpm_1700000000.sync": "'ftp_dpm_1700000000.sync' has no timestamp: expected ftp_dpm_<DPID>[_<TARGET_DPID>]_<TIMESTAMP>.sync",
    "ftp_dpm_21_.sync": "'ftp_dpm_21_.sync' has no timestamp: expected ftp_dpm_<DPID>[_<TARGET_DPID>]_<TIMESTAMP>.sync",
    "ftp_dpm_21_170000000.sync": "'170000000' is not a 10-digit timestamp",
    "ftp_dpm_21_17000000000.sync": "'17000000000' is not a 10-digit timestamp",
    "ftp_dpm_21_2026-11-28.sync": "'2026-11-28' is not a 10-digit timestamp",
    # DPIDs.
    "ftp_dpm_0_1700000000.sync": "'0' is not a DPID (a positive whole number)",
    "ftp_dpm_acme_1700000000.sync": "'acme' is not a DPID (a positive whole number)",
    "ftp_dpm_-21_1700000000.sync": "'-21' is not a DPID (a positive whole number)",
    "ftp_dpm_2147483648_1700000000.sync": "'2147483648' is not a DPID (at most 2147483647)",
    "ftp_dpm_21_0_1700000000.sync": "'0' is not a target DPID (a positive whole number)",
    "ftp_dpm_21_99999999999_1700000000.sync": "'99999999999' is not a target DPID (at most 2147483647)",
    "ftp_dpm_21_22_23_1700000000.sync": "expected ftp_dpm_<DPID>[_<TARGET_DPID>]_<TIMESTAMP>.sync: found 3 numbers before the timestamp",
    "ftp_dpm__21_1700000000.sync": "'' is not a DPID (a positive whole number)",
    "ftp_dpm_odc_1_2_1556223815.sync": "expected ftp_dpm_odc_<DPID>_<TIMESTAMP>.sync, found 2 DPIDs",
    "ftp_dpm_odc_x_1556223815.sync": "'x' is not a DPID (a positive whole number)",
    "adobe_id_21_1700000000.sync": "an ID-sync name needs a master DPID and at least one DPID: adobe_id_<MASTER_DPID>_<DPID>[_<DPID>...]_<TIMESTAMP>.sync",
    "adobe_id_x_21_1700000000.sync": "'x' is not a master DPID (a positive whole number)",
    "adobe_id_0_0_1700000000.sync": "'0' is not a DPID (a positive whole number)",
    "c2c_id_0_4294967296_1700000000.sync": "'4294967296' is not a DPID (at most 2147483647)",
}  # fmt: skip


@pytest.mark.parametrize("name", REFUSED)
def test_every_refusal_says_which_element_is_wrong(name: str) -> None:
    with pytest.raises(FileNameError) as refused:
        parse_inbound_file_name(name)
    assert str(refused.value) == REFUSED[name]


@pytest.mark.parametrize(
    ("parts", "missing"),
    [
        ([], []),
        ([1], []),
        ([0], []),
        ([1, 2, 3], []),
        ([0, 1, 2], []),
        ([1, 3], [2]),
        ([3], [1, 2]),
        ([0, 4], [1, 2, 3]),
        ([2, 1, 5], [3, 4]),
    ],
)
def test_missing_parts_count_from_0_or_1(parts: list[int], missing: list[int]) -> None:
    assert parts_missing(parts) == missing
