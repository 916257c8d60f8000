"""Draw pgqueue's package-level import graph into docs/architecture.md (a Mermaid diagram).

::

    python docs/import_graph.py            # rewrite docs/architecture.md
    python docs/import_graph.py --check    # only check: exit 1 if the graph has a cycle

The graph comes from grimp (the library under import-linter), so it counts every import:
module-level, function-local and ``if TYPE_CHECKING:`` ones. Modules are collapsed to the blocks
of the layered layout (``pgqueue.worker.executor`` -> ``worker``); the drivers are drawn one per
driver because their independence is a rule. ``pgqueue/__init__.py`` is left out: it re-exports
the public API, so it imports nearly everything by design. An arrow ``A --> B`` means some
module of A imports some module of B; dashed arrows are imports made only inside functions or
under ``TYPE_CHECKING``, which still count (import-linter sees them) and are listed below the
diagram. Blocks are placed in the order of the import-linter layers contract in pyproject.toml.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pgqueue"
OUTPUT = ROOT / "docs" / "architecture.md"
#: packages drawn one level deeper than the rest (their children are rules of their own)
EXPANDED = {"pgqueue.drivers"}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    text: str
    kind: str  # "module", "function" or "typing"


def block_of(module: str) -> str | None:
    """The block a module belongs to (``None`` for the root package itself)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    for expanded in EXPANDED:
        depth = expanded.count(".") + 1
        if module.startswith(expanded + ".") and len(parts) > depth:
            return ".".join(parts[1:depth + 1])
    return parts[1]


def import_kinds(path: Path) -> dict[int, str]:
    """Line number of every import statement in ``path`` -> where it sits."""
    tree = ast.parse(path.read_text(), str(path))
    kinds: dict[int, str] = {}

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = kind
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                inner = "function"
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, "typing" if kind == "module" else kind)
                for stmt in child.orelse:
                    visit_stmt(stmt, kind)
                continue
            visit_stmt(child, inner)

    def visit_stmt(node: ast.AST, kind: str) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            kinds[node.lineno] = kind
        visit(node, kind)

    visit(tree, "module")
    return kinds


def collect() -> list[Import]:
    """Every import between two modules of the package, with where it sits."""
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    found: list[Import] = []
    kinds_by_file: dict[str, dict[int, str]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                if importer not in kinds_by_file:
                    kinds_by_file[importer] = import_kinds(_source_file(importer))
                line = int(detail["line_number"])
                found.append(Import(importer, imported, line, str(detail["line_contents"]),
                                    kinds_by_file[importer].get(line, "module")))
    return found


def _source_file(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def layer_order() -> list[list[str]]:
    """The layers of the import-linter ``layers`` contract, top first (optional ``(x)`` kept
    as ``x``)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["type"] == "layers":
            return [[name.strip().strip("()") for name in layer.replace(":", "|").split("|")]
                    for layer in contract["layers"]]
    return []


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one block (Tarjan's algorithm)."""
    successors: dict[str, list[str]] = defaultdict(list)
    nodes: set[str] = set()
    for a, b in edges:
        successors[a].append(b)
        nodes |= {a, b}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(successors[node]):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            connect(node)
    return sorted(found)


def render(imports: list[Import]) -> str:
    """The whole docs/architecture.md."""
    solid: set[tuple[str, str]] = set()
    dashed: set[tuple[str, str]] = set()
    blocks: set[str] = set()
    for imp in imports:
        a, b = block_of(imp.importer), block_of(imp.imported)
        if a is None or b is None or a == b:
            continue
        blocks |= {a, b}
        (solid if imp.kind == "module" else dashed).add((a, b))
    dashed -= solid
    edges = solid | dashed
    loops = cycles(edges)
    in_cycle = {n for component in loops for n in component}

    lines = ["```mermaid", "flowchart TD"]
    placed: set[str] = set()
    for number, layer in enumerate(layer_order()):
        members = sorted(b for b in blocks
                         if b in layer or any(b.startswith(m + ".") for m in layer))
        if not members:
            continue
        lines.append(f'    subgraph L{number}[" "]')
        lines.extend(f"        {_node(m)}" for m in members)
        lines.append("    end")
        placed |= set(members)
    lines.extend(f"    {_node(m)}" for m in sorted(blocks - placed))
    link_styles: list[str] = []
    for number, (a, b) in enumerate(sorted(edges)):
        arrow = "-.->" if (a, b) in dashed else "-->"
        lines.append(f"    {_id(a)} {arrow} {_id(b)}")
        if a in in_cycle and b in in_cycle:
            link_styles.append(f"    linkStyle {number} stroke:#d33,stroke-width:3px")
    lines.extend(link_styles)
    lines.append("```")

    out = [
        "# Architecture: the import graph",
        "",
        "<!-- generated by `python docs/import_graph.py`; do not edit by hand -->",
        "",
        "Each block imports only the blocks below it; `lint-imports` (import-linter, run by",
        "`.ci/run`) holds the rules written in `pyproject.toml` under `[tool.importlinter]`:",
        "layers from `cli` down to `errors`, the drivers independent of each other,",
        "`worker` never importing `app`, nothing importing `cli`, the demo on the public API,",
        "and no cycle between sibling modules at any depth.",
        "",
        "Blocks are the top-level modules and packages of `pgqueue` (the drivers one per",
        "driver), stacked in the order of the layers contract. Dashed arrows are imports made",
        "only inside a function or under `TYPE_CHECKING`; red arrows are part of a cycle.",
        "`pgqueue/__init__.py`, which re-exports the public API, is left out.",
        "",
        *lines,
        "",
        "## Cycles",
        "",
    ]
    if loops:
        out += [f"- {' <-> '.join(component)}" for component in loops]
    else:
        out.append("None.")
    deferred = [i for i in imports if i.kind != "module"
                and block_of(i.importer) != block_of(i.imported)
                and block_of(i.importer) is not None and block_of(i.imported) is not None]
    out += ["", "## Imports inside functions or under TYPE_CHECKING, across blocks", ""]
    if deferred:
        out += ["| importer | line | imports | where |", "|---|---|---|---|"]
        out += [f"| `{i.importer}` | {i.line} | `{i.imported}` | {i.kind} |" for i in deferred]
    else:
        out.append("None.")
    return "\n".join(out) + "\n"


def _id(block: str) -> str:
    return "m_" + block.replace(".", "_")


def _node(block: str) -> str:
    return f'{_id(block)}["{block}"]'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the graph has a cycle")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    text = render(collect())
    has_cycle = "## Cycles\n\nNone." not in text
    if args.check:
        print("the import graph has a cycle" if has_cycle else "no cycle")
        return 1 if has_cycle else 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}" + (" (the graph has a cycle)" if has_cycle else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
