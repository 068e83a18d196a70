"""The code's layout holds: no import circle inside the spec language (``layers/language``), and
nothing in ``layers/`` imports the web service. Imports are read with ``ast``, those under
``if TYPE_CHECKING:`` included: a circle there is a circle for a reader too."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported(path: pathlib.Path) -> set[str]:
    """The modules ``path`` imports (``from a.b import c`` counts as ``a.b`` and ``a.b.c``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def modules(package: str) -> dict[str, pathlib.Path]:
    folder = ROOT / package.replace(".", "/")
    return {f"{package}.{p.stem}": p for p in folder.glob("*.py") if p.stem != "__init__"}


def test_no_import_circle_inside_the_spec_language() -> None:
    language = modules("layers.language")
    graph = {name: sorted(imported(path) & set(language)) for name, path in language.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, "import circle: " + " -> ".join([*path[path.index(name) :], name])
        if name not in done:
            for other in graph[name]:
                visit(other, [*path, name])
            done.add(name)

    for name in graph:
        visit(name, [])
    assert graph["layers.language.walk"], "the graph is read (walk imports base)"


def test_layers_import_no_web_code() -> None:
    for path in (ROOT / "layers").rglob("*.py"):
        web = {name for name in imported(path) if name.split(".")[0] in ("app", "fastapi", "starlette")}
        assert not web, (path, web)
