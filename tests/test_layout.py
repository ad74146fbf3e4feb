"""The house's rules, checked on the source (issue 26): no import circle among the modules of gdino/ and ui/, no
Python file there over 600 lines, at most 12 modules at gdino/'s top level besides its packages, and every module
named in the architecture map (docs/architecture.md)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gdino", "ui")
MAX_LINES = 600
MAX_TOP_LEVEL = 12


def modules() -> dict[str, Path]:
    """Dotted module name -> its file, for every Python file under gdino/ and ui/ (a package is its __init__.py)."""
    found = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that `name` imports anywhere in its file (top level or inside a function: a lazy import
    is still a dependency; `if TYPE_CHECKING:` ones are not). `from a.b import c` is a.b.c where c is a module of
    ours, else a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for n in ast.walk(block)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:  # `if TYPE_CHECKING:` imports never run
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            names = [f"{origin}.{alias.name}" for alias in node.names]
            # `from a import b` where b is a module of ours depends on b; a name from a's own file depends on a
            targets = names + ([origin] if any(n not in known for n in names) else [])
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as the list of modules around it, or None (depth-first search, colours)."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        trail.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_circle_and_only_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_among_our_modules():
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    found = cycle(graph)
    assert found is None, "import circle: " + " -> ".join(found)


def test_no_python_file_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_at_most_12_modules_at_the_top_of_gdino():
    top = sorted(p.name for p in (ROOT / "gdino").glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL, top


def test_every_module_is_in_the_architecture_map():
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for path in modules().values():
        shown = path.relative_to(ROOT)
        shown = f"{shown.parent}/" if path.name == "__init__.py" else str(shown)
        if f"`{shown}`" not in text:
            missing.append(shown)
    js = [f"{p.relative_to(ROOT)}" for p in (ROOT / "ui").rglob("*.js")]
    missing += [p for p in js if f"`{p}`" not in text]
    assert not missing, f"add a line for each to docs/architecture.md: {missing}"
