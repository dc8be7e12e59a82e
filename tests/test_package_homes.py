"""Each concern keeps one home: tables are declared in schemas/, causal/ does not import sinks/,
and no two kprobe modules import each other at import time.

Read from the source (the folders pyproject.toml maps to packages), so a new module is checked
without being listed here.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    """Every kprobe module name -> its file, from pyproject.toml's package-dir mapping."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = config["package-dir"]
    out: dict[str, Path] = {}
    for package in config["packages"]:
        top = package.split(".")[1] if "." in package else ""
        if f"kprobe.{top}" in dirs:      # a mapped folder (sinks/ -> kprobe.sinks); its subpackages follow it
            folder = REPO / dirs[f"kprobe.{top}"] / Path(*package.split(".")[2:])
        else:                            # the root package and its subpackages (kprobe/cli)
            folder = REPO / Path(*package.split("."))
        for f in folder.glob("*.py"):
            name = package if f.stem == "__init__" else f"{package}.{f.stem}"
            out[name] = f
    return out


def _at_import_time(node: ast.AST) -> list[ast.AST]:
    """The nodes Python runs when it imports the module: not function bodies, not ``if TYPE_CHECKING:``."""
    out: list[ast.AST] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            out += [n for c in child.orelse for n in [c, *_at_import_time(c)]]
            continue
        out += [child, *_at_import_time(child)]
    return out


def _imports(tree: ast.AST, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """kprobe modules a file imports (``from pkg import mod`` counts as mod when mod is a module);
    ``top_level_only``: only the imports that run when the module is imported."""
    nodes = _at_import_time(tree) if top_level_only else ast.walk(tree)
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kprobe") and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("kprobe")}
    return out


def test_modules_are_found() -> None:
    modules = _modules()
    # the mapping is read right: one module of each kind of folder is there
    assert {"kprobe.cli.why", "kprobe.sinks.kafka", "kprobe.schemas.store_tables", "kprobe.embedded"} <= set(modules)
    assert all(f.is_file() for f in modules.values())


def test_causal_does_not_import_sinks() -> None:
    """causal/ is pure analysis: sinks/ store its results (graph deltas), never the reverse."""
    modules = _modules()
    bad = {name: sorted(i for i in _imports(ast.parse(f.read_text()), modules, top_level_only=False)
                        if i.startswith("kprobe.sinks"))
           for name, f in modules.items() if name.startswith("kprobe.causal")}
    assert {k: v for k, v in bad.items() if v} == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more nodes (Tarjan's, iterative): the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(graph[root])))]
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d", "f"}, "f": {"e"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["e", "f"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_at_import_time() -> None:
    """A module-level import cycle makes import order matter and ties two packages together."""
    modules = _modules()
    graph = {name: {i for i in _imports(ast.parse(f.read_text()), modules, top_level_only=True)
                    if i in modules and i != name} for name, f in modules.items()}
    assert _cycles(graph) == []


def test_tables_are_declared_only_in_schemas() -> None:
    """A TableDef is built in schemas/ (store_tables.py) and nowhere else in the product."""
    modules = _modules()
    builders = sorted(name for name, f in modules.items() if not name.startswith("kprobe.schemas")
                      for node in ast.walk(ast.parse(f.read_text()))
                      if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("TableDef", "Column"))
    assert builders == []
    assert "kprobe.schemas.store_tables" in {
        name for name, f in modules.items()
        for node in ast.walk(ast.parse(f.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "TableDef"}


# A name reused across packages is fine when it is the same job in another subsystem (a
# subsystem's status file, its errors, its probe capture) or a CLI command named for the package
# it drives; anything else is two jobs under one name, and a reader opens the wrong file.
SHARED_NAMES = {"status", "errors", "capture"}


def test_a_module_name_means_one_job() -> None:
    by_stem: dict[str, list[str]] = {}
    for name in _modules():
        parts = name.split(".")
        if len(parts) > 2 and parts[-1] != parts[-2]:
            by_stem.setdefault(parts[-1], []).append(name)
    clashes = {}
    for stem, names in by_stem.items():
        outside_cli = [n for n in names if not n.startswith("kprobe.cli.")]
        if len(outside_cli) > 1 and stem not in SHARED_NAMES:
            clashes[stem] = sorted(names)
    assert not clashes, f"same module name, different jobs: rename one of each {clashes}"


def test_the_readme_folder_table_names_every_folder() -> None:
    """A newcomer reads the README's folder table to find where a concern lives: a folder missing
    from it is a folder nobody finds."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    folders = {line.split("/", 1)[0] for line in tracked.splitlines() if "/" in line}
    table = (REPO / "README.md").read_text()
    missing = sorted(f for f in folders if f"| `{f}/" not in table)
    assert not missing, f"folders without a row in the README's folder table: {missing}"


def test_tests_mirror_the_packages() -> None:
    """A module's tests are in the folder named like its package (or top-level folder); what a test needs (root and the
    kernel, the servers) is a marker, so a folder never hides a package's tests by requirement."""
    packages = {name.split(".")[1] for name in _modules() if name.count(".") >= 1}
    tests = REPO / "tests"
    helpers = {"workloads", "security", "hosts", "__pycache__"}   # cross-package scenarios
    folders = {d.name for d in REPO.iterdir() if d.is_dir()}      # deploy/ is tested too, and is no package
    strays = sorted(d.name for d in tests.iterdir()
                    if d.is_dir() and not d.name.startswith(".") and d.name not in packages | folders | helpers)
    assert not strays, f"test folders that are no package: {strays}"
    loose = sorted(f.name for f in tests.glob("test_*.py") if f.name != Path(__file__).name)
    assert not loose, f"tests outside their package's folder: {loose}"


def test_code_does_not_quote_one_machines_timings() -> None:
    """Timings measured on one machine belong to bench output and docs, where their date and host
    are stated; in code comments they go stale silently."""
    sources = [*_modules().values(), *(REPO / "probes").glob("*.bpf.c"), *(REPO / "replay").glob("*.c")]
    quoting = sorted(str(p.relative_to(REPO)) for p in sources if "this VM" in p.read_text())
    assert not quoting, f"comments quoting 'this VM': {quoting}"
