"""Helpers of the benchmarks that decide whether a figure can be trusted.

- The benchmarks that compare this checkout with another tree (``--other-tree``) build the
  database with this checkout's schema. ``same_schema`` says when the other tree's worker runs
  on tables it was not written for (its PostgreSQL figures are then not its own).
- ``_decayed_ceilings`` says when the claim+complete ceiling slowed down during its own run
  (a server without autovacuum): the drains' ratios to it would overstate pgqueue."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import REPO, SCHEMA_FILE, same_schema
from benchmarks.run import _decayed_ceilings


def _tree(root: Path, schema: bytes | None) -> Path:
    (root / "pgqueue").mkdir(parents=True)
    (root / "pgqueue" / "__init__.py").write_text("")
    if schema is not None:
        (root / SCHEMA_FILE).parent.mkdir(parents=True)
        (root / SCHEMA_FILE).write_bytes(schema)
    return root


def test_a_tree_with_this_schema_is_comparable(tmp_path: Path) -> None:
    assert same_schema(REPO)
    assert same_schema(_tree(tmp_path, (REPO / SCHEMA_FILE).read_bytes()))


def test_a_tree_with_another_schema_or_none_is_not(tmp_path: Path) -> None:
    changed = (REPO / SCHEMA_FILE).read_bytes().replace(b"jobs_claim_idx", b"claim_idx")
    assert not same_schema(_tree(tmp_path / "changed", changed))
    assert not same_schema(_tree(tmp_path / "none", None))


def _ceiling(per_second: list[float]) -> dict[str, object]:
    return {"ceiling": {"claim_complete_c4_jobs_per_s": {"per_second": per_second}}}


def test_a_ceiling_that_slows_down_during_its_run_is_flagged() -> None:
    # the shared server of one run (autovacuum off): 64k jobs/s in the first seconds, 30k last
    assert _decayed_ceilings(_ceiling([64145, 58600, 50715, 40325, 31135, 30205])) == [
        "-c 4: 61,372 -> 30,670 jobs/s"]
    assert _decayed_ceilings(_ceiling([60590, 57860, 53040, 50300, 46050])) == []  # -20%: noise
    assert _decayed_ceilings(_ceiling([1000, 900])) == []  # too short to tell
    assert _decayed_ceilings({"ceiling": {}}) == []
