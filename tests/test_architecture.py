"""The package's shape: imports point down only (the import-linter contract in pyproject.toml),
no module imports another that imports it back, and no module grows into several concepts."""
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def test_layers_contract_holds():
    run = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                                                "sys.exit(lint_imports())"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), lazy imports included.
    A package's __init__ importing its own modules is its face, not a circle: those edges are
    left out, as are imports of a package's face by its own modules."""
    modules = sorted(graph.modules)
    is_package = {m: any(o.startswith(m + ".") for o in modules) for m in modules}

    def edges(m):
        for other in graph.find_modules_directly_imported_by(m):
            if is_package[m] and other.startswith(m + "."):
                continue
            if is_package[other] and m.startswith(other + "."):
                continue
            yield other

    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for m in modules:
        if m not in index:
            visit(m)
    return out


def test_no_import_circles_between_modules():
    graph = grimp.build_graph("autoslim_hw")
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for m in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(m)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    graph.add_import(importer="pkg", imported="pkg.c")  # a package's face: not a circle
    graph.add_import(importer="pkg.c", imported="pkg")
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_module_is_a_second_package():
    """One concept per module: a module over 400 lines has grown several; split it."""
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines())
             for p in (ROOT / "autoslim_hw").rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 400} == {}
