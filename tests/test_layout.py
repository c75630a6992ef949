"""The layout rules of docs/architecture.md, checked on the source with ``ast`` (nothing is imported).

1. Layers: storage <- vta_core <- stages <- flows <- cli. A module imports only its own or lower
   layers; module-level and function-level imports both count. bench/ and tests/ are outside the rule.
2. No import cycles between the modules of those packages.
3. ``stages/`` holds only stages: each module defines ``STAGE = "<its file name>"``; no subpackages.
4. Nothing in the repository cites a file that lives outside it.
5. docs/architecture.md names every module and folder, and the docs name no module that does not exist.

Each check is a function of a root folder, so the tests below also run it on a small violating tree
to prove it reports what it should.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("storage", "vta_core", "stages", "flows", "cli")  # lowest first
# Files the project was once told about but that are not part of it: citing them documents nothing.
OUTSIDE_FILES = ("DESIGN" + ".md", "REFERENCE" + ".md", "DATA" + ".md")
_SKIP_DIRS = {"__pycache__", "node_modules", "vta-artifacts", "build", "dist"}
_TEXT_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".txt", ".sh"}


# --- the import graph ------------------------------------------------------------------------------
def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py of the layered packages that exist under ``root``."""
    out: dict[str, Path] = {}
    for package in LAYERS:
        base = root / package
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported project module) for every import statement in the file, at any depth."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def deepest(name: str) -> str | None:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in known:
                return candidate
        return None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # ``from pkg import sub`` imports the submodule when there is one
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            target = deepest(name)
            if target is not None and target != module:
                found.append((node.lineno, target))
    return found


def import_graph(root: Path) -> dict[str, list[tuple[int, str]]]:
    """Module -> [(line, imported module)] over the layered packages under ``root``."""
    modules = _modules(root)
    known = set(modules)
    return {m: _imports(m, p, known) for m, p in modules.items()}


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def layer_violations(root: Path) -> list[str]:
    """``file:line: A imports B`` wherever a module imports from a higher layer."""
    modules = _modules(root)
    out = []
    for module, edges in import_graph(root).items():
        for line, target in edges:
            if _layer(target) > _layer(module):
                rel = modules[module].relative_to(root)
                out.append(f"{rel}:{line}: {module} ({LAYERS[_layer(module)]}) imports {target} "
                           f"({LAYERS[_layer(target)]})")
    return sorted(out)


def import_cycles(root: Path) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search, each once, as [m0, m1, ..., m0]."""
    graph = {m: sorted({t for _, t in edges}) for m, edges in import_graph(root).items()}
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph.get(m, []):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):]
                k = cycle.index(min(cycle))
                canonical = tuple(cycle[k:] + cycle[:k])
                if canonical not in seen:
                    seen.add(canonical)
                    cycles.append([*canonical, canonical[0]])
            elif state.get(t) is None:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


# --- stages/ ---------------------------------------------------------------------------------------
def _stage_constant(path: Path) -> str | None:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        if any(isinstance(t, ast.Name) and t.id == "STAGE" for t in targets):
            return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else repr(value)
    return None


def stage_violations(root: Path) -> list[str]:
    """What in ``stages/`` is not a stage module with ``STAGE == <file name>``."""
    base = root / "stages"
    out = []
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        rel = entry.relative_to(root)
        if entry.name == "__pycache__" or entry.name == "__init__.py":
            continue
        if entry.is_dir():
            out.append(f"{rel}: a folder; stages/ holds stage modules only")
        elif entry.suffix != ".py":
            out.append(f"{rel}: not a stage module")
        elif (stage := _stage_constant(entry)) is None:
            out.append(f"{rel}: no module-level STAGE string (library code belongs in storage/ or vta_core/)")
        elif stage != entry.stem:
            out.append(f"{rel}: STAGE = {stage!r}, expected {entry.stem!r} (the file name)")
    return out


# --- citations -------------------------------------------------------------------------------------
def _text_files(root: Path) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if any(p.startswith(".") or p in _SKIP_DIRS or p.endswith(".egg-info") for p in rel[:-1]):
            continue
        if path.is_file() and (path.suffix in _TEXT_SUFFIXES or path.name == "Dockerfile"):
            out.append(path)
    return out


def outside_citations(root: Path, *, exclude: tuple[Path, ...] = ()) -> list[str]:
    """``file:line`` of every mention of a file outside the repository (see OUTSIDE_FILES)."""
    out = []
    for path in _text_files(root):
        if path.resolve() in {p.resolve() for p in exclude}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            out.extend(f"{path.relative_to(root)}:{n}: cites {name}" for name in OUTSIDE_FILES if name in line)
    return out


# --- the docs --------------------------------------------------------------------------------------
FOLDERS = (*LAYERS, "vta_core/metrics", "vta_core/evaluation", "bench", "tests", "docker", "docs", "scripts")
# a module path as docs write it (placeholders such as stages/NAME.py are upper case: not matched)
_MODULE_PATH = re.compile(r"(?<![\w/.])((?:" + "|".join((*LAYERS, "bench")) + r")/[a-z0-9_/]*[a-z0-9_]\.py)\b")


def undocumented(root: Path) -> list[str]:
    """Modules and folders that docs/architecture.md does not name."""
    doc = (root / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(_MODULE_PATH.findall(doc))
    out = [f"folder {f}/" for f in FOLDERS if (root / f).is_dir() and f"`{f}/`" not in doc]
    for package in (*LAYERS, "bench"):
        base = root / package
        for path in sorted(base.rglob("*.py")) if base.is_dir() else []:
            rel = path.relative_to(root).as_posix()
            if "__pycache__" not in rel and not rel.startswith("bench/results/") and rel not in named:
                out.append(f"module {rel}")
    return out


def stale_module_names(root: Path, docs: tuple[str, ...] = ("architecture.md", "algorithms.md")) -> list[str]:
    """``doc: path`` for every module path a doc names that is not in the tree."""
    out = []
    for name in docs:
        doc = root / "docs" / name
        text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
        out.extend(f"docs/{name}: {m}" for m in sorted(set(_MODULE_PATH.findall(text))) if not (root / m).is_file())
    return out


# --- the repository --------------------------------------------------------------------------------
def test_layers_import_only_downward() -> None:
    assert layer_violations(REPO) == []


def test_no_import_cycles() -> None:
    assert [" -> ".join(c) for c in import_cycles(REPO)] == []


def test_stages_holds_only_stages() -> None:
    assert stage_violations(REPO) == []


def test_no_citations_of_files_outside_the_repository() -> None:
    assert outside_citations(REPO, exclude=(Path(__file__),)) == []


def test_architecture_doc_names_every_module_and_folder() -> None:
    assert undocumented(REPO) == []


def test_docs_name_only_existing_modules() -> None:
    assert stale_module_names(REPO) == []


def test_the_layered_packages_are_found() -> None:
    modules = _modules(REPO)
    for package in ("storage", "vta_core", "stages", "flows"):
        assert package in modules, package
    assert "storage.store" in modules and "stages.decode" in modules


# --- each check can fail ---------------------------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checks_report_a_violating_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "storage/__init__.py": "",
        "storage/store.py": "def f():\n    from stages.decode import STAGE\n",  # upward, inside a function
        "vta_core/__init__.py": "",
        "vta_core/a.py": "from . import b\n",  # a 2-cycle through a relative import
        "vta_core/b.py": "import vta_core.a\n",
        "vta_core/c.py": "from storage import store\nfrom vta_core.a import x\n",  # fine: own and lower layer
        "stages/__init__.py": "",
        "stages/decode.py": 'STAGE = "decode"\n',
        "stages/flow.py": 'STAGE = "optical_flow"\n',
        "stages/helpers.py": "def util(): ...\n",
        "stages/sub/__init__.py": "",
        "flows/__init__.py": "",
        "flows/x.py": "import cli.main\n",
        "flows/y.py": "",
        "cli/__init__.py": "",
        "cli/main.py": "from flows import y\nfrom storage.store import f\n",  # fine
        "bench/b.py": "import cli.main\n",  # outside the rule
        "README.md": "see " + OUTSIDE_FILES[1] + "\n",
        "docs/architecture.md": "`storage/` holds `storage/store.py` and `storage/gone.py`; `stages/` `flows/`\n",
    })
    assert layer_violations(root) == [
        "flows/x.py:1: flows.x (flows) imports cli.main (cli)",
        "storage/store.py:2: storage.store (storage) imports stages.decode (stages)",
    ]
    assert import_cycles(root) == [["vta_core.a", "vta_core.b", "vta_core.a"]]
    assert stage_violations(root) == [
        "stages/flow.py: STAGE = 'optical_flow', expected 'flow' (the file name)",
        "stages/helpers.py: no module-level STAGE string (library code belongs in storage/ or vta_core/)",
        "stages/sub: a folder; stages/ holds stage modules only",
    ]
    assert outside_citations(root) == ["README.md:1: cites " + OUTSIDE_FILES[1]]
    assert undocumented(root)[:3] == ["folder vta_core/", "folder cli/", "folder bench/"]
    assert "module storage/__init__.py" in undocumented(root) and "module storage/store.py" not in undocumented(root)
    assert stale_module_names(root) == ["docs/architecture.md: storage/gone.py"]


def test_longer_cycles_and_missing_cli(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "storage/__init__.py": "from storage.a import x\n",
        "storage/a.py": "import storage.b\n",
        "storage/b.py": "from storage import a\n",  # submodule import: a -> b -> a
        "flows/__init__.py": "",
        "flows/p.py": "def f():\n    import flows.q\n",
        "flows/q.py": "import flows.r\n",
        "flows/r.py": "from flows.p import f\n",
    })
    assert not (root / "cli").exists() and layer_violations(root) == []
    assert import_cycles(root) == [
        ["flows.p", "flows.q", "flows.r", "flows.p"],
        ["storage.a", "storage.b", "storage.a"],
    ]
