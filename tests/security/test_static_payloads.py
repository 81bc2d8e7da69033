"""Layer 1 alone: every escape payload is rejected by static analysis with its rule id."""

from __future__ import annotations

import pytest

from evaljail.policy import Policy
from evaljail.policy.analysis import analyze
from tests.security.payloads_static import PAYLOADS


def test_table_is_large_and_ids_are_unique() -> None:
    ids = [payload_id for payload_id, _, _ in PAYLOADS]
    assert len(ids) >= 80
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("code", "expected_rule"),
    [pytest.param(code, rule, id=payload_id) for payload_id, code, rule in PAYLOADS],
)
def test_static_analysis_rejects_payload(code: str, expected_rule: str) -> None:
    report = analyze(code, Policy())
    found = {v.rule_id for v in report.violations}
    assert not report.ok
    assert expected_rule in found, f"expected {expected_rule}, found {sorted(found)}"


@pytest.mark.parametrize(
    ("code", "expected_rule"),
    [pytest.param(code, rule, id=payload_id) for payload_id, code, rule in PAYLOADS],
)
def test_payload_still_rejected_under_scientific_profile(code: str, expected_rule: str) -> None:
    """A larger allow-list must not open any of these doors."""
    report = analyze(code, Policy.scientific())
    assert expected_rule in {v.rule_id for v in report.violations}
