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


def import_graph(package: str = PACKAGE, root: str = ROOT, top_level: bool = False) -> dict[str, set[str]]:
    """module -> the modules of `package` that importing it, or running it (`python -m`, its `__main__` block), runs
    (packages' __init__ are modules too). `top_level=True`: only what importing it runs at once (no function bodies,
    no `__main__` block, no `if TYPE_CHECKING:` block)."""
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
        for node in imports(path, top_level):
            for target in (t for t in targets(node, modules) if t in modules):
                graph[module].add(target)
                parts = target.split(".")
                for depth in range(1, len(parts)):   # the packages above it that this module is not inside
                    parent = ".".join(parts[:depth])
                    if parent in packages and not (home == parent or home.startswith(parent + ".")):
                        graph[module].add(parent)
        graph[module].discard(module)
    return graph


def _deferred(node: ast.AST) -> bool:
    """A statement that importing its module does not run at once: a function body, `if __name__ == "__main__":`
    (runs only as `python -m module`) or `if TYPE_CHECKING:`."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        return True
    return isinstance(node, ast.If) and ("__name__" in ast.unparse(node.test) or "TYPE_CHECKING" in ast.unparse(node.test))


def imports(path: str, top_level: bool = False, in_functions: bool = False) -> list[ast.stmt]:
    """The import statements of a source file: all of them; only those importing it runs (`top_level`); or only
    those inside a function body (`in_functions`), each with its enclosing function as `.function`."""
    found = []

    def visit(node, deferred, function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if (top_level and deferred) or (in_functions and function is None):
                    continue
                child.function = function
                found.append(child)
            is_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            visit(child, deferred or _deferred(child), child if is_function else function)

    visit(ast.parse(open(path, encoding="utf-8").read()), False, None)
    return found


def targets(node: ast.stmt, modules) -> list[str]:
    """What one import statement names: `import a.b` -> a.b; `from P import X` -> the submodule P.X, or the package P
    when X is one of its names (its __init__ runs). Third-party names are returned as written."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not node.module or node.level:
        return []
    return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]


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


# `python -m` shims kept from the seed: each runs a front-end of cli/ (prepare_dataset always; synthetic_corpus only in
# its `__main__` block, importing it loads the corpus writer)
CLI_SHIMS = {"scaledown.data.prepare_dataset", "scaledown.data.synthetic_corpus"}


def imports_of_cli(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Modules outside scaledown.cli (the command-line front-ends) that import it: library code must not."""
    def in_cli(name):
        return name == "scaledown.cli" or name.startswith("scaledown.cli.")
    return {m: {n for n in deps if in_cli(n)} for m, deps in graph.items()
            if not in_cli(m) and m not in CLI_SHIMS and any(in_cli(n) for n in deps)}


def test_library_code_never_imports_the_command_line():
    """Library code never imports a front-end, not even inside a function (only the seed's `python -m` shims do)."""
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


# Optional dependencies (setup.py's extras and the Neuron stack): imported where they are used, inside functions, so a
# machine without them runs everything else.
OPTIONAL = {"deepspeed", "mpi4py", "psutil", "ninja", "torch_neuronx", "neuronx_distributed", "torch_xla",
            "libneuronxla", "neuronxcc", "datasets", "bm25s", "scipy", "pyarrow", "matplotlib", "vllm", "accelerate"}
# What the command line must not load before it has checked the flags
HEAVY = {"torch", "transformers", "peft"}
# The launch side: the backend table and each backend's flags, parsed with the command line (before torch loads)
LAUNCH_SIDE = {"scaledown.training.backends.registry", "scaledown.training.backends.user_backend"}


def deferred_import_faults(package: str = PACKAGE, root: str = ROOT) -> list[str]:
    """Imports inside functions that the rule (issue 17, item 6) does not allow, as "module:line target".

    Allowed inside a function: an optional dependency, or a module of ours that imports one when loaded (deepspeed's
    engine, BM25 ...); and, in a front-end (cli/, the launch side, a package __init__'s lazy `__getattr__` exports,
    PEP 562), anything that loads torch / transformers / peft, so a bad flag is named before they load. Everything
    else is imported at the top of the module, where the layering shows."""
    graph = import_graph(package, root, top_level=True)
    modules = set(graph)
    lazy_packages = {m for m in modules if any(getattr(n.function, "name", "") == "__getattr__"
                                               for n in imports(_path(m, root), in_functions=True))}
    loads = {}

    def loaded(module):   # third-party packages importing `module` runs at once, through our modules too
        if module not in loads:
            loads[module] = set()
            for node in imports(_path(module, root), top_level=True):
                for t in targets(node, modules):
                    loads[module] |= loaded(t) if t in modules else {t.split(".")[0]}
            for t in graph[module]:
                loads[module] |= loaded(t)
        return loads[module]

    faults = []
    for module in sorted(modules):
        front_end = (module.split(".")[1:2] == ["cli"] or module.endswith(".launch") or module in LAUNCH_SIDE
                     or module in lazy_packages)
        for node in imports(_path(module, root), in_functions=True):
            for t in targets(node, modules):
                reached = loaded(t) if t in modules else {t.split(".")[0]}
                if t in modules:   # importing a.b.c runs a and a.b first
                    parts = t.split(".")
                    for depth in range(2, len(parts)):
                        reached = reached | loaded(".".join(parts[:depth]))
                if reached & OPTIONAL or (front_end and (reached & HEAVY or t in lazy_packages)):
                    continue
                faults.append(f"{module}:{node.lineno} {t}")
    return faults


def _path(module: str, root: str) -> str:
    path = os.path.join(root, *module.split("."))
    return path + ".py" if os.path.isfile(path + ".py") else os.path.join(path, "__init__.py")


def test_imports_inside_functions_only_for_optional_packages_and_fail_fast_front_ends():
    assert deferred_import_faults() == []


def test_the_import_rule_sees_a_deferred_import_of_a_light_module(tmp_path):
    files = {"pkg/__init__.py": "", "pkg/light.py": "import json\n", "pkg/heavy.py": "import torch\n",
             "pkg/plots.py": "def f():\n    import matplotlib\n",
             "pkg/lib.py": "def f():\n    from pkg import light\n    import os\n",
             "pkg/cli/__init__.py": "", "pkg/cli/main.py": "def f():\n    from pkg import heavy\n    from pkg import light\n"}
    for name, text in files.items():
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_text(text)
    faults = deferred_import_faults(str(tmp_path / "pkg"), str(tmp_path))
    assert faults == ["pkg.cli.main:3 pkg.light", "pkg.lib:2 pkg.light", "pkg.lib:3 os"]
