# scaledown/ has no import circles: every module's imports, inside functions too, read from its source.
import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "scaledown")


def _script_block(node) -> bool:
    """`if __name__ == "__main__":` -- runs only as `python -m module`, never on import."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def import_graph(skip_script_blocks: bool = False) -> dict[str, set[str]]:
    """module -> the scaledown modules it imports anywhere in its file (packages' __init__ are modules too);
    skip_script_blocks: leave out what `if __name__ == "__main__":` imports (a module run as a script)."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                modules[os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")] = path
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(open(path, encoding="utf-8").read())
        if skip_script_blocks:
            tree.body = [node for node in tree.body if not _script_block(node)]
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[module] |= {n for n in names if n in modules and n != module}
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
    # a script block runs as module __main__, a second copy: it cannot close a circle of imports
    assert circles(import_graph(skip_script_blocks=True)) == []


def test_circle_finder_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


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
    assert imports_of_cli(import_graph(skip_script_blocks=True)) == {}


def test_cli_import_finder_sees_an_upward_import():
    graph = {"scaledown.cli.args": set(), "scaledown.evaluation.plots": {"scaledown.cli.args"},
             "scaledown.cli.plot": {"scaledown.evaluation.plots"}}
    assert imports_of_cli(graph) == {"scaledown.evaluation.plots": {"scaledown.cli.args"}}


def test_front_ends_live_under_cli():
    """Every module that parses a command line (argparse / FriendlyParser) is under scaledown/cli/."""
    parsers = []
    for module, path in _module_paths().items():
        source = open(path, encoding="utf-8").read()
        if not module.startswith("scaledown.cli") and ("ArgumentParser(" in source or "FriendlyParser(" in source):
            parsers.append(module)
    assert parsers == []


def _module_paths() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")] = path
    return found
