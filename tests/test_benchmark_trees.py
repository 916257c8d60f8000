"""The benchmarks that compare this checkout with another tree (``--other-tree``) build the
database with this checkout's schema. ``same_schema`` says when the other tree's worker runs on
tables it was not written for (its PostgreSQL figures are then not its own)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._common import REPO, SCHEMA_FILE, same_schema


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
