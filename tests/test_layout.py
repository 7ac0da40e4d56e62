"""The package's house plan, checked on the source: import directions between layers, module size, and a
judging protocol that never loads torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fapo"

LAYERS: dict[str, int] = {
    "cli": 4,
    "demo": 3, "trl": 3,
    "train": 2, "eval": 2, "testbed": 2,
    "grm": 1, "serving": 1, "verify": 1, "outcome": 1, "models": 1, "integrations": 1,
    "boxed": 0, "steps": 0, "io": 0, "process_pool": 0, "policy_prompt": 0, "rewards": 0, "theory": 0,
    "metrics": 0, "oracles": 0, "answers": 0, "schema": 0, "bounds": 0, "__init__": 0,
}
"""Top-level unit (package or module under fapo/) → floor: cli → {demo, trl} → {train, eval, testbed} → {grm, serving,
verify, ...} → small helpers. An import may go down or stay on its floor, never up."""

SIDEWAYS_FORBIDDEN: dict[str, set[str]] = {
    "grm": {"serving", "verify", "outcome", "models", "integrations"},
    "verify": {"grm", "serving", "outcome", "models", "integrations"},
    "outcome": {"grm", "serving", "models", "integrations"},
    "serving": {"integrations"},
    "models": {"serving", "integrations"},
    "train": {"eval", "testbed"},
    "eval": {"train", "testbed"},
    "testbed": {"train", "eval"},
}
"""Same-floor imports that are not allowed either: the judging protocol needs only helpers (it speaks HTTP to any
server); verification knows nothing of judges; training, evaluation and the testbed do not reach into each other
(a named oracle is resolved by string through `fapo.oracles`)."""

MAX_MODULE_LINES = 450


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _package(path: Path) -> str:
    """The package a module's relative imports start from (`fapo.train` for train/x.py and train/__init__.py)."""
    return ".".join(("fapo",) + path.relative_to(SRC).with_suffix("").parts[:-1])


def _from_module(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of a `from ... import` (relative levels resolved against `package`)."""
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imported_units(path: Path) -> set[str]:
    """Top-level fapo units that `path` imports anywhere (module level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _package(path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _from_module(node, package)
            if module == "fapo":  # `from fapo import x`: a unit when x is a module or package, else fapo/__init__
                root = path.parents[len(path.relative_to(SRC).parts) - 1]
                names.update(f"fapo.{a.name}" if (root / a.name).is_dir() or (root / f"{a.name}.py").is_file()
                             else "fapo.__init__" for a in node.names)
            else:
                names.add(module)
    return {n.split(".")[1] for n in names if n.startswith("fapo.") and len(n.split(".")) > 1}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_unit_has_a_floor():
    units = {_unit(p) for p in _modules()}
    assert units <= set(LAYERS), f"give these a floor in LAYERS: {sorted(units - set(LAYERS))}"


def test_no_import_runs_up_a_floor_or_across_a_forbidden_wall():
    bad = []
    for path in _modules():
        unit = _unit(path)
        for target in _imported_units(path) - {unit, "__init__"}:
            if target not in LAYERS:
                bad.append(f"{path.relative_to(SRC)} imports unknown fapo.{target}")
            elif LAYERS[target] > LAYERS[unit]:
                bad.append(f"{path.relative_to(SRC)} (floor {LAYERS[unit]}) imports fapo.{target} (floor {LAYERS[target]})")
            elif target in SIDEWAYS_FORBIDDEN.get(unit, set()):
                bad.append(f"{path.relative_to(SRC)}: fapo.{unit} must not import fapo.{target}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The walker must catch an import hidden in a function, or it could pass while the graph is wrong."""
    fake = tmp_path / "fapo"
    (fake / "grm").mkdir(parents=True)
    module = fake / "grm" / "x.py"
    module.write_text("def f():\n    from fapo.serving.server import serve\n    from ..train import runner\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    assert _imported_units(module) == {"serving", "train"}


def _module_name(path: Path) -> str:
    parts = ("fapo",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, known: set[str]) -> dict[str, set[str]]:
    """fapo modules that `path` imports (module level or inside functions; TYPE_CHECKING blocks excepted, as
    they never run) → the names taken from each (`from m import a, b`; empty for `import m`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _package(path)
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.setdefault(alias.name, set())
        elif isinstance(node, ast.ImportFrom):
            module = _from_module(node, package)
            for alias in node.names:
                if f"{module}.{alias.name}" in known:  # `from fapo.train import runner`: the module itself
                    found.setdefault(f"{module}.{alias.name}", set())
                elif module in known:
                    found.setdefault(module, set()).add(alias.name)
    return found


def _import_graph() -> dict[str, dict[str, set[str]]]:
    paths = {_module_name(p): p for p in _modules()}
    return {name: _imported_modules(path, set(paths)) for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_between_modules():
    """Each module can be read from its imports down: no two modules import each other, directly or round a
    circle (function-level imports count; a package's `__init__` importing its own modules does not close one)."""
    graph = {m: {t for t in targets if not m.startswith(t + ".") and t != m} for m, targets in _import_graph().items()}
    circles = _cycles(graph)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_is_imported_across_modules():
    private = [f"{m} imports {name} from {target}" for m, targets in _import_graph().items()
               for target, names in targets.items() for name in names
               if name.startswith("_") and not name.endswith("__") and target != m]
    assert not private, "make these public (or move them below both): " + "; ".join(private)


def test_no_module_is_over_450_lines():
    long = {str(p.relative_to(SRC)): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules (over {MAX_MODULE_LINES} lines): {long}"


MAX_FUNCTION_LINES = 60
"""One screen: a longer function is split into named steps."""


def test_no_function_is_over_a_screen():
    long = [f"{p.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for p in _modules() for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"split these functions (over {MAX_FUNCTION_LINES} lines): " + "; ".join(long)


@pytest.mark.parametrize("package", ["grm"])
def test_the_judging_protocol_imports_no_torch_and_no_serving(package):
    modules = sorted(f"fapo.{package}.{p.stem}" for p in (SRC / package).glob("*.py") if p.stem != "__init__")
    script = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
              + "print(sorted(m for m in ('torch', 'transformers', 'fapo.serving', 'fapo.testbed') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"importing {modules} loaded {done.stdout.strip()}"
