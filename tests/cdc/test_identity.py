"""Replica identity planning: what each --old-values does to each kind of table."""

from __future__ import annotations

import pytest

from cdc.errors import ConfigurationError
from cdc.identity import IdentityPlan, plan_identity


@pytest.mark.parametrize(
    ("current", "has_pk", "requested", "plan"),
    [
        ("d", True, None, IdentityPlan(None, "key")),
        ("f", False, None, IdentityPlan(None, "full")),
        ("i", False, None, IdentityPlan(None, "key")),
        ("d", True, "full", IdentityPlan("FULL", "full")),
        ("d", False, "full", IdentityPlan("FULL", "full")),
        ("f", True, "full", IdentityPlan(None, "full")),
        ("n", False, "full", IdentityPlan("FULL", "full")),
        ("d", True, "key", IdentityPlan(None, "key")),
        ("i", False, "key", IdentityPlan(None, "key")),
        ("f", True, "key", IdentityPlan("DEFAULT", "key")),
        ("n", True, "key", IdentityPlan("DEFAULT", "key")),
        ("n", True, None, IdentityPlan("DEFAULT", "key")),
    ],
)
def test_plans(current: str, has_pk: bool, requested: str | None, plan: IdentityPlan) -> None:
    assert plan_identity("t", current, has_pk, requested) == plan


@pytest.mark.parametrize(
    ("current", "requested"), [("d", None), ("d", "key"), ("n", None), ("f", "key")]
)
def test_keyless_table_is_refused_with_advice(current: str, requested: str | None) -> None:
    with pytest.raises(ConfigurationError, match="no primary key.*use --old-values full"):
        plan_identity('"public"."t"', current, False, requested)


def test_bad_input() -> None:
    with pytest.raises(ConfigurationError, match="unknown replica identity"):
        plan_identity("t", "x", True, None)
    with pytest.raises(ConfigurationError, match="'full' or 'key'"):
        plan_identity("t", "d", True, "some")
