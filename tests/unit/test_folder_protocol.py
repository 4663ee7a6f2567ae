# The checkpoint folder protocol lives in one module: its names are defined once, commits are atomic, retention is safe.
import ast
import os

import pytest

from conftest import ROOT
from scaledown.checkpoint import folder_protocol as protocol
from scaledown.errors import CheckpointError

PACKAGE = os.path.join(ROOT, "scaledown")
PROTOCOL = os.path.join("scaledown", "checkpoint", "folder_protocol.py")
ATOMIC = os.path.join("scaledown", "atomic_files.py")
ALIAS = "scaledown.training.checkpoint_dirs"


def package_sources():
    """(path relative to the repo, parsed module) of every file of the package."""
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, ROOT), ast.parse(open(path, encoding="utf-8").read())


def code_strings(tree):
    """String constants that are code (not docstrings), with the literal parts of f-strings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def calls_of(tree, module, names):
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names
                and isinstance(node.func.value, ast.Name) and node.func.value.id == module):
            yield node.lineno


# ---- one definition ----------------------------------------------------------------------------------------------
def test_protocol_names_are_spelled_only_in_the_protocol_module():
    """trainer_state.json, `latest` and the step_N tag format are literals of folder_protocol.py alone."""
    found = []
    for path, tree in package_sources():
        if path == PROTOCOL:
            continue
        for text in code_strings(tree):
            if text in ("trainer_state.json", "latest") or text.startswith("step_"):
                found.append(f"{path}: {text!r}")
    assert found == [], "define these in scaledown/checkpoint/folder_protocol.py and import them: " + "; ".join(found)


def test_renames_into_place_only_in_the_atomic_files_module():
    """os.replace / os.rename / shutil.move (the commit of an atomic write) appear in scaledown/atomic_files.py only."""
    found = []
    for path, tree in package_sources():
        if path == ATOMIC:
            continue
        found += [f"{path}:{line} os.{name}" for name in ("replace", "rename")
                  for line in calls_of(tree, "os", {name})]
        found += [f"{path}:{line} shutil.move" for line in calls_of(tree, "shutil", {"move"})]
        found += [f"{path}: {text!r}" for text in code_strings(tree) if ".tmp" in text]
    assert found == [], "write through scaledown.atomic_files (or folder_protocol for checkpoints): " + "; ".join(found)


def test_checkpoint_package_does_not_import_training_and_nothing_imports_the_old_module():
    found = []
    for path, tree in package_sources():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if path.startswith(os.path.join("scaledown", "checkpoint", "")) and name.startswith("scaledown.training"):
                    found.append(f"{path} imports {name}")
                if name == ALIAS:
                    found.append(f"{path} imports the old {name}")
    assert found == []


# ---- the protocol ------------------------------------------------------------------------------------------------
def _checkpoint(root, step, complete=True):
    path = os.path.join(root, protocol.tag_for(step))
    staging = protocol.new_staging(path)
    with open(os.path.join(staging, "model.bin"), "wb") as f:
        f.write(b"weights")
    protocol.commit(staging, path)
    if complete:
        protocol.write_state(path, {"step": step})
    return path


def test_interrupted_commit_leaves_no_visible_tag(tmp_path):
    root = str(tmp_path / "checkpoints")
    done = _checkpoint(root, 2)
    final = os.path.join(root, protocol.tag_for(4))
    staging = protocol.new_staging(final)   # a writer killed here: files staged, never committed
    with open(os.path.join(staging, "model.bin"), "wb") as f:
        f.write(b"half")
    assert not os.path.exists(final)
    assert protocol.complete_checkpoints(root) == [(2, done)]
    assert protocol.resolve_resume("auto", str(tmp_path)) == done
    # committed but killed before trainer_state.json: the tag exists yet does not count, and resuming it is refused
    _checkpoint(root, 6, complete=False)
    assert protocol.complete_checkpoints(root) == [(2, done)]
    assert protocol.resolve_resume("auto", str(tmp_path)) == done
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        protocol.resolve_resume(os.path.join(root, protocol.tag_for(6)), str(tmp_path))
    # the next save removes the leftovers: the staging folder (prune) and the incomplete tag (clear_incomplete)
    protocol.prune(root, keep=0)
    assert not os.path.exists(staging)
    protocol.clear_incomplete(os.path.join(root, protocol.tag_for(6)))
    protocol.clear_incomplete(done)
    assert sorted(os.listdir(root)) == [protocol.tag_for(2)]


def test_shared_staging_folder_is_invisible_and_replaces_an_older_tag(tmp_path):
    root = str(tmp_path)
    path = _checkpoint(root, 3)
    staging = protocol.staging_path(path)
    assert protocol.staging_path(path) == staging   # every rank computes the same folder
    os.makedirs(staging)
    with open(os.path.join(staging, "model.bin"), "wb") as f:
        f.write(b"new")
    assert protocol.complete_checkpoints(root) == [(3, path)]
    protocol.commit(staging, path)
    assert open(os.path.join(path, "model.bin"), "rb").read() == b"new"
    assert not protocol.is_complete(path)   # the loop writes trainer_state.json again after the commit
    assert os.listdir(root) == [protocol.tag_for(3)]


def test_retention_keeps_the_newest_complete_and_never_the_one_in_progress(tmp_path):
    root = str(tmp_path)
    paths = {step: _checkpoint(root, step) for step in (1, 2, 3, 4)}
    in_progress = os.path.join(root, protocol.tag_for(5))
    os.makedirs(in_progress)   # an engine writing in place (DeepSpeed, NxD): no trainer_state.json yet
    removed = protocol.prune(root, keep=2)
    assert sorted(removed) == [paths[1], paths[2]]
    assert protocol.complete_checkpoints(root) == [(3, paths[3]), (4, paths[4])]
    assert os.path.isdir(in_progress)   # neither counted nor removed
    # the checkpoint just written is protected even when older ones are newer by step (a resumed earlier step)
    old = _checkpoint(root, 1)
    assert protocol.prune(root, keep=1, protect=old) == [paths[3]]
    assert protocol.complete_checkpoints(root) == [(1, old), (4, paths[4])]
    assert protocol.prune(root, keep=0) == []   # 0 keeps all


def test_latest_and_state_round_trip(tmp_path):
    root = str(tmp_path)
    path = _checkpoint(root, 7)
    protocol.mark_latest(root, protocol.tag_for(7))
    assert protocol.read_latest(root) == "step_0000007"
    assert protocol.read_state(path) == {"step": 7} == protocol.checked_state(path)
    assert protocol.state_if_any(str(tmp_path / "nowhere")) is None
    assert protocol.step_of_tag(path) == 7 and protocol.step_of_tag("final") is None
    assert not [n for n in os.listdir(root) if ".tmp" in n]
    with open(protocol.state_path(path), "w") as f:
        f.write("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        protocol.checked_state(path)
