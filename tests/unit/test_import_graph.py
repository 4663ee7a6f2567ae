# scaledown/ has no import circles: every module's imports, inside functions too, read from its source.
"""The graph is what Python runs: `from scaledown.models import X` imports the package scaledown/models/__init__.py
(or the submodule X), and importing scaledown.models.presets from outside scaledown/models/ first runs that
package's __init__ (which imports the model), so config.py -> models/presets.py was a circle through it."""
import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "scaledown")
# Circles still known, each exactly (its strongly connected modules); the test fails on any other one, on one that
# grew, and when one of these is gone. None now: the released-OSCAR reader that builds a live model moved from
# checkpoint/ into models/ (models -> checkpoint -> models was the last circle).
KNOWN: list[set[str]] = []


def module_name(path: str, root: str) -> str:
    name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def _script_block(node) -> bool:
    """`if __name__ == "__main__":` -- runs only as `python -m module`, never on import."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def import_graph(package: str = PACKAGE, root: str = ROOT) -> dict[str, set[str]]:
    """module -> the modules of `package` that importing it runs (packages' __init__ are modules too). What an
    `if __name__ == "__main__":` block imports is left out: it runs as module __main__ (a second copy, only as
    `python -m module`), so it neither closes a circle nor loads anything on import."""
    modules = {}
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                modules[module_name(path, root)] = path
    packages = {m for m, path in modules.items() if path.endswith("__init__.py")}
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        home = module if module in packages else module.rpartition(".")[0]
        tree = ast.parse(open(path, encoding="utf-8").read())
        tree.body = [node for node in tree.body if not _script_block(node)]
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from P import X`: the submodule P.X, or a name of the package P (its __init__)
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            for target in (t for t in targets if t in modules):
                graph[module].add(target)
                parts = target.split(".")
                for depth in range(1, len(parts)):   # the packages above it that this module is not inside
                    parent = ".".join(parts[:depth])
                    if parent in packages and not (home == parent or home.startswith(parent + ".")):
                        graph[module].add(parent)
        graph[module].discard(module)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    found = circles(import_graph())
    unknown = [c for c in found if set(c) not in KNOWN]   # a known circle that grew is a new one
    assert unknown == [], f"import circles: {unknown}"
    gone = [known for known in KNOWN if not any(known == set(c) for c in found)]
    assert gone == [], f"these known circles are gone: remove them from KNOWN: {gone}"


def test_config_and_presets_import_no_subpackage():
    """Presets are data below the config: config.py and presets.py reach no scaledown subpackage (models/, data/ ...)."""
    graph = import_graph()
    for base in ("scaledown.config", "scaledown.presets"):
        seen, todo = set(), [base]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert sorted(m for m in seen if m.count(".") > 1 or m.rpartition(".")[2] in
                      {"models", "data", "training", "checkpoint", "parallel", "evaluation", "cli"}) == [], base


def test_the_model_imports_no_backend_checkpoint_or_command_line():
    """models/ is the bottom of the stack (DESIGN): it reaches no training/ (backends), checkpoint/, parallel/,
    data/, evaluation/ or cli/ module, not even inside a function."""
    graph = import_graph()
    above = ("training", "checkpoint", "parallel", "data", "evaluation", "cli")
    reached = {module: sorted(t for t in targets if t.split(".")[1] in above)
               for module, targets in graph.items() if module.startswith("scaledown.models")}
    assert {m: t for m, t in reached.items() if t} == {}


def test_circle_finder_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_graph_sees_a_circle_through_a_package_init(tmp_path):
    """pkg/a.py imports pkg.sub.b; pkg/sub/__init__.py re-exports pkg.sub.c, which imports pkg.a: a circle that
    runs only through the package's __init__."""
    files = {"pkg/__init__.py": "", "pkg/a.py": "def f():\n    from pkg.sub.b import g\n",
             "pkg/sub/__init__.py": "from pkg.sub.c import h\n", "pkg/sub/b.py": "g = 1\n",
             "pkg/sub/c.py": "from pkg import a\nh = 2\n"}
    for name, text in files.items():
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(str(tmp_path / "pkg"), str(tmp_path))
    assert graph["pkg.a"] == {"pkg.sub.b", "pkg.sub"} and graph["pkg.sub"] == {"pkg.sub.c"}
    assert circles(graph) == [["pkg.a", "pkg.sub", "pkg.sub.c"]]


# the seed's `python -m scaledown.data.prepare_dataset` must keep working: a shim that calls into cli/
CLI_SHIMS = {"scaledown.data.prepare_dataset"}


def imports_of_cli(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Modules outside scaledown.cli (the command-line front-ends) that import it: library code must not."""
    def in_cli(name):
        return name == "scaledown.cli" or name.startswith("scaledown.cli.")
    return {m: {n for n in deps if in_cli(n)} for m, deps in graph.items()
            if not in_cli(m) and m not in CLI_SHIMS and any(in_cli(n) for n in deps)}


def test_library_code_never_imports_the_command_line():
    """Importing library code never loads a front-end (a module's script block may call one: `python -m
    scaledown.data.synthetic_corpus` runs scaledown.cli.synthetic_corpus)."""
    assert imports_of_cli(import_graph()) == {}


def test_cli_import_finder_sees_an_upward_import():
    graph = {"scaledown.cli.args": set(), "scaledown.evaluation.plots": {"scaledown.cli.args"},
             "scaledown.cli.plot": {"scaledown.evaluation.plots"}}
    assert imports_of_cli(graph) == {"scaledown.evaluation.plots": {"scaledown.cli.args"}}


def test_front_ends_live_under_cli():
    """Every module that parses a command line (argparse / FriendlyParser) is under scaledown/cli/."""
    parsers = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or module_name(path, ROOT).startswith("scaledown.cli"):
                continue
            source = open(path, encoding="utf-8").read()
            if "ArgumentParser(" in source or "FriendlyParser(" in source:
                parsers.append(module_name(path, ROOT))
    assert parsers == []
