"""The import graph of the ``decal`` package, read from the source with ``ast``: no cycle
between modules, no import against the layer order, no underscore name imported from another
module. The layers, lowest first (ARCHITECTURE.md, "Layers"):

    kernels ← dali_pipes ← server (+ proto) ← trainers ← decal (the face) ← bench

Every runtime import counts, at module level or inside a function, and so does a string
constant that names a submodule of the package (``import_module(name)``, lazy export tables);
imports under ``if TYPE_CHECKING:`` do not. One upward edge is allowed: the face's CLI
(``decal/cli.py``) loads ``decal.bench`` inside ``build_parser``, only for ``decal bench``.
A private module (``kernels/_cuda.py``) is private to its package: its siblings may import it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]

#: Import-namespace prefix → rank; a module may import only ranks <= its own.
LAYERS = {
    "decal.kernels": 0,
    "decal.dali_pipes": 1,
    "decal.proto": 2,
    "decal.server": 2,
    "decal.trainers": 3,
    "decal": 4,
    "decal.bench": 5,
}


#: ``dali_pipes/`` folder → rank (ARCHITECTURE.md, "Inside dali_pipes/"): a module may import
#: its own folder and lower ranks only, so two families of one rank never import each other.
DATA_FOLDERS = {
    "core": 0,
    "coco": 1,
    "folder": 2,
    "copy_paste": 3,
    "cutmix": 3,
    "cp2": 3,
    "mosaic": 4,
    "balanced": 4,
    "self_training": 4,
    "preview": 5,
}

#: (importer, imported prefix) pairs allowed against the layer order, deferred imports only.
ALLOWED_UPWARD = {("decal.cli", "decal.bench")}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    names: tuple[str, ...]
    top_level: bool
    line: int


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {name: ROOT / path for name, path in config["tool"]["setuptools"]["package-dir"].items()}


def modules() -> dict[str, Path]:
    """Dotted module name → source file, for every ``.py`` file of the package."""
    found: dict[str, Path] = {}
    for package, folder in package_dirs().items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            if any(p.startswith(".") or p == "tests" for p in parts):
                continue
            found[".".join([package, *parts])] = path
    return found


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def dynamic_names(tree: ast.AST) -> set[int]:
    """ids of the string constants that may name a module to import: the arguments of
    ``import_module(...)`` and the items of dict, tuple and list literals (lazy export and
    command tables). Other strings (a logger's name, a docstring) are not imports."""
    found: set[int] = set()
    for node in ast.walk(tree):
        items: list[ast.AST] = []
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "import_module":
            items = list(node.args)
        elif isinstance(node, ast.Dict):
            items = list(node.values)
        elif isinstance(node, (ast.Tuple, ast.List)):
            items = list(node.elts)
        found |= {id(i) for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str) and "." in i.value}
    return found


def edges(known: dict[str, Path]) -> list[Edge]:
    out: list[Edge] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        type_only = {
            id(n)
            for stmt in ast.walk(tree)
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)
            for body in stmt.body
            for n in ast.walk(body)
        }
        top = {id(n) for n in tree.body} | {
            id(n) for stmt in tree.body if isinstance(stmt, (ast.If, ast.Try)) for n in ast.walk(stmt)
        }
        named = dynamic_names(tree)
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if id(node) in named and node.value in known:
                out.append(Edge(module, node.value, (), False, node.lineno))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("decal"):
                        out.append(Edge(module, alias.name, (), id(node) in top, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = resolve(module, is_package, node)
                if not target.startswith("decal"):
                    continue
                names = tuple(a.name for a in node.names)
                submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
                if submodules:
                    for sub in submodules:
                        out.append(Edge(module, sub, (), id(node) in top, node.lineno))
                    names = tuple(n for n in names if f"{target}.{n}" not in known)
                    if not names:
                        continue
                out.append(Edge(module, target, names, id(node) in top, node.lineno))
    return out


def layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


KNOWN = modules()
EDGES = edges(KNOWN)


def test_the_graph_is_read() -> None:
    """Guard against a reader that finds nothing (which would make every check pass)."""
    assert {"decal.kernels.copy_paste", "decal.dali_pipes.copy_paste.loader", "decal.server.pipelines", "decal.cli"} <= set(KNOWN)
    assert any(e.source == "decal.server.pipelines" and e.target == "decal.proto.decal_pb2" for e in EDGES)
    assert len(EDGES) > 200


def test_imports_follow_the_layer_order() -> None:
    wrong = [
        f"{e.source}:{e.line} imports {e.target} (layer {layer(e.target)} above {layer(e.source)})"
        for e in EDGES
        if layer(e.target) > layer(e.source)
        and not (not e.top_level and any(e.source == s and e.target.startswith(t) for s, t in ALLOWED_UPWARD))
    ]
    assert not wrong, "\n".join(wrong)


def data_folder(module: str) -> str | None:
    """The ``dali_pipes/`` folder of a module (``decal.dali_pipes.coco.reader`` → ``"coco"``)."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["decal", "dali_pipes"] and len(parts) > 3 else None


def test_every_dali_pipes_folder_has_a_rank() -> None:
    folders = {p.name for p in (ROOT / "dali_pipes").iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(DATA_FOLDERS)
    assert [p.name for p in (ROOT / "dali_pipes").glob("*.py")] == ["__init__.py"], "a module outside the folders"


def test_dali_pipes_folders_import_downwards() -> None:
    wrong = [
        f"{e.source}:{e.line} imports {e.target} ({target} is not below {source})"
        for e in EDGES
        if (source := data_folder(e.source)) and (target := data_folder(e.target))
        and source != target and DATA_FOLDERS[target] >= DATA_FOLDERS[source]
    ]
    assert not wrong, "\n".join(wrong)
    assert any(data_folder(e.source) == "mosaic" and data_folder(e.target) == "copy_paste" for e in EDGES)


def test_no_private_name_imported_from_another_module() -> None:
    wrong = [
        f"{e.source}:{e.line} imports {name} from {e.target}"
        for e in EDGES
        for name in e.names
        if name.startswith("_") and not name.startswith("__") and e.target != e.source
    ]
    wrong += [
        f"{e.source}:{e.line} imports the private module {e.target} from outside its package"
        for e in EDGES
        if e.target.rsplit(".", 1)[-1].startswith("_") and e.source.rsplit(".", 1)[0] != e.target.rsplit(".", 1)[0]
    ]
    assert not wrong, "\n".join(wrong)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for e in EDGES:
        if e.target in KNOWN and e.target != e.source:
            graph.setdefault(e.source, set()).add(e.target)
    cycle = find_cycle(graph)
    assert cycle is None, " → ".join(cycle or [])


def test_server_does_not_import_the_face() -> None:
    assert not [e for e in EDGES if e.source.startswith("decal.server") and layer(e.target) > 2]


def test_trainer_cli_and_trainers_do_not_import_each_other_back() -> None:
    """``trainers/cli.py`` names the trainer modules (``import_module``); they must not import it."""
    assert any(e.source == "decal.trainers.cli" and e.target == "decal.trainers.detection.train" for e in EDGES)
    assert not [e for e in EDGES if e.target == "decal.trainers.cli" and e.source.startswith("decal.trainers")]


def test_face_cli_loads_the_bench_only_for_decal_bench() -> None:
    code = (
        "import sys\n"
        "from decal.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['check', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert not [m for m in sys.modules if m.startswith('decal.bench')], 'decal.bench imported'\n"
        "try:\n"
        "    main(['bench', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'decal.bench.throughput' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "throughput benchmark" in result.stdout


def test_face_cli_help_is_the_same_with_and_without_the_bench_loaded() -> None:
    from decal.cli import build_parser

    assert build_parser(bench=False).format_help() == build_parser(bench=True).format_help()
