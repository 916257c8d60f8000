"""The distribution name: free on the package index (``pgqueue`` there is an unrelated 2016
project), used by every install line of the docs and of pgqueue's own messages; the import
package stays ``pgqueue``."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pgqueue

ROOT = Path(__file__).resolve().parent.parent
DIST = "pgqueue-tx"

#: the first requirement of a ``pip install`` command (options such as ``-e``/``-q`` skipped)
PIP_INSTALL = re.compile(r"pip install\s+(?:-\S+\s+)*['\"]?([\w.\-\[\],]+)")


def _install_targets(text: str) -> list[str]:
    """The requirement of every ``pip install`` command in ``text``."""
    return PIP_INSTALL.findall(text)


def test_the_distribution_name_is_not_the_taken_one() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST
    # the dev extra pulls the other extras through the project's own name
    assert any(req.startswith(f"{DIST}[") for req in project["optional-dependencies"]["dev"])
    assert project["scripts"]["pgqueue"] == "pgqueue.cli:main"


def test_the_import_package_comes_from_that_distribution() -> None:
    assert DIST in importlib.metadata.packages_distributions()["pgqueue"]
    assert importlib.metadata.distribution(DIST).entry_points.select(
        group="console_scripts", name="pgqueue")
    assert pgqueue.__name__ == "pgqueue"


def test_every_install_line_uses_the_distribution_name() -> None:
    files = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / ".ci" / "run",
             *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "pgqueue").rglob("*.py"))]
    wrong = []
    for path in files:
        for target in _install_targets(path.read_text()):
            if target.startswith("pgqueue") and not target.startswith(DIST):
                wrong.append(f"{path.relative_to(ROOT)}: pip install {target}")
    assert wrong == []
    readme = (ROOT / "README.md").read_text()
    assert f"pip install {DIST}" in readme
    # and how to install from a checkout
    assert "pip install -e" in readme and "## Install" in readme
