from __future__ import annotations

from tests.partners.inbound.conftest import Deliver, World, counters, expect


def test_the_spec_worked_example(world: World, deliver: Deliver) -> None:
    receipt = deliver(
        {
            "ftp_dpm_21_1700000000.sync": "u1\td_sid=10,d_sid=11\n"
            "u2\td_sid=90,zz=1\n"
            "u9\td_sid=10\n"
            "u1 d_sid=10\n"
        }
    )
    assert counters(receipt) == expect(
        records_received=4,
        format_errors=1,
        no_matching_ids=1,
        no_trait_realized=1,
        records_processed=4,
        stored_records=1,
        total_devices=1,
        total_signals=5,
        total_unused_signals=1,
        total_realized_traits=2,
        total_traits_failed_validation=1,
        total_users_with_failed_traits=1,
    )
    assert world.held(world.u1) == {10, 11}
    assert world.held(world.u2) == set()
    kinds = [(e["kind"], e["line"]) for e in receipt.errors_sample]
    assert kinds == [
        ("format_error", 4),
        ("no_matching_id", 3),
        ("no_trait_realized", 2),
        ("trait_failed_validation", 2),
    ]
