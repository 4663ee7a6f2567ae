# `--backend package.module:Class`: a Backend subclass named on the command line, imported only then.
"""Why a name on the command line and not an entry-point group: importing a module runs its code, and here that
happens only when this command names it (an entry-point group would import whatever any installed distribution
registered, for every `scaledown train`); and a backend under development needs no package install to be tried.

The class is built as Class(config), like the local backend. Optional class attributes: `ranks` ("one": a single
process, the default; "many": ranks started by a launcher such as torchrun) and `description`.
"""
from __future__ import annotations

import importlib
import re

from scaledown.errors import ConfigError
from scaledown.training.backends.registry import REGISTRY, BackendSpec

IMPORT_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
HELP = ("or package.module:Class, a Backend subclass (scaledown/training/backends/base.py) imported from this "
        "Python path: that module's code runs, so name only code you trust")


def is_import_name(name: str) -> bool:
    return bool(IMPORT_NAME.match(name or ""))


def import_spec(name: str) -> BackendSpec:
    """The BackendSpec of `package.module:Class`; ConfigError naming the module or class when it cannot be used."""
    from scaledown.training.backends.base import Backend  # torch: the launch side loads it only for --backend X:Y
    module_name, _, class_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--backend {name}: module {module_name} cannot be imported ({exc}). Put its folder on "
                          f"PYTHONPATH (or install it), or choose a built-in backend.") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(f"--backend {name}: {module_name} has no class {class_name} deriving from "
                          f"scaledown.training.backends.base.Backend"
                          f"{'' if cls is None else f' ({class_name} is a {type(cls).__name__})'}.")
    ranks = getattr(cls, "ranks", "one")
    if ranks not in ("one", "many"):
        raise ConfigError(f"--backend {name}: {class_name}.ranks is {ranks!r}; set it to 'one' (a single process) "
                          f"or 'many' (ranks from a launcher).")
    return BackendSpec(name, entry="scaledown train", ranks=ranks, build=lambda config, run: cls(config),
                       description=getattr(cls, "description", None))


def spec_for(name: str) -> BackendSpec:
    """A registry backend by name, else the imported `package.module:Class`."""
    return REGISTRY[name] if name in REGISTRY else import_spec(name)
