# A resumed run is the same run: its settings and data come from the checkpoint; a change is handled by its kind.
"""Every entry point (train.py, `scaledown train`, launchers/train_gpu.py, launchers/train_trn1.py) and the
ScaleDownTrainer API go through this file. The kind of each setting lives with the setting
(ScaleDownConfig field metadata `resume`, config.RUN_INPUTS for the data flags):

    architecture   refused before anything loads, naming the fields
    run            refused unless --allow_changed_settings (then listed and recorded in trainer_state.json)
    free           taken from this command (parallel layout, micro-batch, backend, logging, eval cadence, output)
    command        never read from a checkpoint (trust_remote_code: only this command's flag counts)

A checkpoint records `config`, `run_inputs` (data paths, example counts) and `data_files` (a content
fingerprint of each data file). Checkpoints written before settings were recorded resume with the flags
given, with a note.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from scaledown.checkpoint import folder_protocol as ckpt
from scaledown.config import (DATA_FILE_INPUTS, MODEL_PATH_FIELDS, RUN_INPUTS, ScaleDownConfig, field_meta,
                              fields_where, local_model_path)
from scaledown.errors import CheckpointError, ConfigError

ALLOW_FLAG = "--allow_changed_settings"
RUN_INPUT_DEFAULTS = {"num_eval_examples": 500, "skip_bad_rows": False}
FINGERPRINT_BYTES = 1 << 20   # a data file is recognised by its size and the hash of its first MiB


@dataclass
class Resumed:
    """What a resume command runs: the checkpoint, the run's config and inputs, and what it changed."""
    path: str
    state: dict[str, Any]
    config: ScaleDownConfig
    inputs: dict[str, Any]
    changes: list[dict[str, Any]] = field(default_factory=list)   # run-defining settings changed (allowed)
    notes: list[str] = field(default_factory=list)


# ---- which checkpoint -----------------------------------------------------------------------------------------
def locate(resume_from: Optional[str], output_dir: str) -> Optional[str]:
    """The checkpoint folder `--resume_from` names (None: not resuming, or 'auto' with no checkpoint yet).

    Raises CheckpointError for an empty value, a damaged newest checkpoint (naming the previous complete one),
    or a checkpoint older than others of the same run folder (resuming it would replace them).
    """
    if resume_from is None:
        return None
    if not str(resume_from).strip():
        raise ConfigError("--resume_from is empty. Pass 'auto' (the newest complete checkpoint of --output_dir), a "
                          "checkpoint folder, or a run folder; to start a new run leave the flag out.")
    path = ckpt.resolve_resume(resume_from, output_dir)
    if path is None:
        return None
    read_state(path)   # a garbled trainer_state.json stops here, naming the previous complete checkpoint
    newer = [p for step, p in ckpt.complete_checkpoints(ckpt.checkpoints_root(output_dir))
             if step > _step_of(path) and os.path.abspath(p) != os.path.abspath(path)]
    if newer and os.path.abspath(os.path.dirname(os.path.normpath(path))) == \
            os.path.abspath(ckpt.checkpoints_root(output_dir)):
        raise CheckpointError(
            f"--resume_from {resume_from}: {path} is older than {len(newer)} checkpoint(s) of the same run "
            f"({', '.join(newer[:3])}); continuing from it would replace them as the run reaches their steps. Resume "
            f"the newest with --resume_from auto, move the newer ones out of {ckpt.checkpoints_root(output_dir)} "
            f"first, or continue in another --output_dir.")
    return path


def run_dir_of(resume_from: Optional[str]) -> Optional[str]:
    """The run folder (--output_dir) a --resume_from path belongs to: D for D/checkpoints/step_N or D itself."""
    if not resume_from or resume_from == "auto":
        return None
    path = os.path.normpath(resume_from)
    if os.path.basename(os.path.dirname(path)) == "checkpoints":
        return os.path.dirname(os.path.dirname(path))
    if os.path.isdir(ckpt.checkpoints_root(path)):
        return path
    return None


def read_state(path: str) -> dict[str, Any]:
    """trainer_state.json of a checkpoint; a damaged one raises CheckpointError naming what to do."""
    return ckpt.checked_state(path)


def _step_of(path: str) -> int:
    try:
        return int(read_state(path)["step"])
    except CheckpointError:
        return -1


# ---- data files -------------------------------------------------------------------------------------------------
def fingerprint(path: str) -> dict[str, Any]:
    """{'bytes', 'sha256_head'} of a file, or of a folder's files (names, sizes and heads), to recognise the data."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        total = 0
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                file = os.path.join(root, name)
                size = os.path.getsize(file)
                total += size
                digest.update(f"{os.path.relpath(file, path)}:{size};".encode())
                with open(file, "rb") as f:
                    digest.update(f.read(FINGERPRINT_BYTES // 16))
        return {"bytes": total, "sha256_head": digest.hexdigest()}
    with open(path, "rb") as f:
        digest.update(f.read(FINGERPRINT_BYTES))
    return {"bytes": os.path.getsize(path), "sha256_head": digest.hexdigest()}


def run_record(inputs: dict[str, Any], changes: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """The trainer_state.json entries that let a resume command reproduce the run."""
    inputs = {name: inputs.get(name, RUN_INPUT_DEFAULTS.get(name)) for name in RUN_INPUTS}
    files = {}
    for name in DATA_FILE_INPUTS:
        if inputs.get(name):
            inputs[name] = os.path.abspath(inputs[name])
            if os.path.exists(inputs[name]):
                files[name] = fingerprint(inputs[name])
    return {"run_inputs": inputs, "data_files": files, "changed_settings": list(changes or [])}


# ---- reconciling a resume command with the checkpoint ------------------------------------------------------------
def resume_run(path: str, explicit: dict[str, Any], explicit_inputs: dict[str, Any], allow_changed: bool,
               fresh: Optional[Callable[[Optional[dict[str, Any]]], ScaleDownConfig]] = None) -> Resumed:
    """The resumed run's config and inputs: the checkpoint's, with this command's explicit values by kind.

    `explicit`: ScaleDownConfig values this command set (flags, --config, --neuron_config); `explicit_inputs`: the
    data flags it set; `fresh(recorded)`: the config a new run of these flags would have on top of the given
    recorded settings (for checkpoints that recorded no run inputs: converted ones, or older ones). Raises
    before any model is built.
    """
    state = read_state(path)
    if "settings_recorded" not in state or "run_inputs" not in state:   # converted, or written before runs recorded
        # the run is the checkpoint's (a converted folder records the source's config: model, prompt, optimizer
        # and schedule settings, not its preset): this command's flags change it only where given
        recorded = state.get("config") if isinstance(state.get("config"), dict) else {}
        kept = {k: v for k, v in recorded.items()
                if k in set(ScaleDownConfig.field_names()) and k not in ("output_dir", "trust_remote_code")}
        config = (fresh(kept) if fresh else ScaleDownConfig.from_dict({**kept, **explicit}, source="command line"))
        _refuse_architecture(path, _differences(recorded, config.to_dict(), "architecture"))
        why = (f"was converted from {state['converted_from']}" if state.get("converted_from") else
               "was written before checkpoints recorded their run's settings and data")
        changed = _differences(recorded, config.to_dict(), "run") + _differences(recorded, config.to_dict(), "free")
        note = (f"note: {path} {why}; resuming with its recorded settings and the data files of this command"
                + ("; this command changes " + "; ".join(f"{c['setting']} {c['was']!r} -> {c['now']!r}"
                                                         for c in changed if c["setting"] != "output_dir")
                   if any(c["setting"] != "output_dir" for c in changed) else "") + ".")
        inputs = {name: explicit_inputs.get(name, RUN_INPUT_DEFAULTS.get(name)) for name in RUN_INPUTS}
        return Resumed(path, state, config, inputs, notes=[note])
    recorded = dict(state.get("config") or {})
    known = set(ScaleDownConfig.field_names())
    notes = [f"note: {path} records setting {k!r}, which this version does not have; ignored."
             for k in recorded if k not in known]
    values = {k: v for k, v in recorded.items() if k in known}
    saved_remote = values.pop("trust_remote_code", False)
    values.update({k: v for k, v in explicit.items() if field_meta(k, "resume") != "command"})
    if "output_dir" not in explicit and run_dir_of(path):   # the run continues in its own folder
        values["output_dir"] = run_dir_of(path)
    values["trust_remote_code"] = bool(explicit.get("trust_remote_code", False))
    if saved_remote and not values["trust_remote_code"]:
        notes.append("note: the checkpoint records trust_remote_code=true; ignored (remote code runs only when this "
                     "command passes --trust_remote_code).")
    _refuse_architecture(path, _differences(recorded, values, "architecture"))
    config = ScaleDownConfig.from_dict(values, source="command line")
    changed = _differences(recorded, config.to_dict(), "run")
    inputs, input_changes, input_notes = _resolve_inputs(state, explicit_inputs)
    changed += input_changes
    notes += input_notes
    if changed and not allow_changed:
        listed = "; ".join(f"{c['setting']}: {c['was']!r} -> {c['now']!r}" for c in changed)
        raise ConfigError(
            f"--resume_from {path}: this command changes settings that define the run being resumed ({listed}). A "
            f"resumed run is the same run: drop these flags to continue it as recorded (`--resume_from auto "
            f"--output_dir DIR` alone is enough), or pass {ALLOW_FLAG} to change them (they are then printed and "
            f"recorded in trainer_state.json under changed_settings).")
    free = _differences(recorded, config.to_dict(), "free")
    if free:
        notes.append("resumed with other free settings: " + "; ".join(
            f"{c['setting']} {c['was']!r} -> {c['now']!r}" for c in free))
    if changed:
        notes.append(f"{ALLOW_FLAG}: changed settings of the resumed run: " + "; ".join(
            f"{c['setting']} {c['was']!r} -> {c['now']!r}" for c in changed))
    return Resumed(path, state, config, inputs, changes=changed, notes=notes)


def check_config(state: dict[str, Any], config: ScaleDownConfig, allow_changed: bool, path: str) -> None:
    """ScaleDownTrainer's check of a resumed run's whole config against its checkpoint (the API path)."""
    recorded = state.get("config")
    if not isinstance(recorded, dict):
        return
    _refuse_architecture(path, _differences(recorded, config.to_dict(), "architecture"))
    if "settings_recorded" in state and not allow_changed:
        changed = _differences(recorded, config.to_dict(), "run")
        if changed:
            listed = "; ".join(f"{c['setting']}: {c['was']!r} -> {c['now']!r}" for c in changed)
            raise ConfigError(f"resume_from={path}: the config differs from the run being resumed in settings that "
                              f"define it ({listed}). Use the checkpoint's values, or pass "
                              f"allow_changed_settings=True to change them.")


def _differences(recorded: dict[str, Any], values: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    out = []
    for name in fields_where(resume=kind):
        # a base model recorded by a relative path (runs before paths were made absolute) is the same folder
        same = (local_model_path(recorded.get(name)) == local_model_path(values.get(name))
                if name in MODEL_PATH_FIELDS else False)
        if name in recorded and name in values and recorded[name] != values[name] and not same:
            out.append({"setting": name, "was": recorded[name], "now": values[name]})
    return out


def _refuse_architecture(path: str, diffs: list[dict[str, Any]]) -> None:
    if diffs:
        listed = "; ".join(f"{d['setting']}: checkpoint {d['was']!r}, this command {d['now']!r}" for d in diffs)
        raise CheckpointError(
            f"--resume_from {path}: these settings define the model's architecture and differ from the checkpoint's "
            f"({listed}). A resumed run keeps its model: drop these flags (the checkpoint's values are used), or start "
            f"a new run in another --output_dir (--init_from RUN/final starts from its weights).")


def _resolve_inputs(state: dict[str, Any], explicit: dict[str, Any]):
    recorded = state.get("run_inputs") or {}
    files = state.get("data_files") or {}
    inputs, changes, notes = {}, [], []
    for name in RUN_INPUTS:
        was = recorded.get(name, RUN_INPUT_DEFAULTS.get(name))
        now = explicit.get(name)
        if name in DATA_FILE_INPUTS:
            value, change, note = _resolve_file(name, was, now, files.get(name))
            inputs[name] = value
            changes += [change] if change else []
            notes += [note] if note else []
            continue
        inputs[name] = was if now is None else now
        if now is not None and now != was:
            changes.append({"setting": name, "was": was, "now": now})
    return inputs, changes, notes


def _resolve_file(name: str, was: Optional[str], now: Optional[str], recorded_print: Optional[dict]):
    flag = f"--{name}"
    if now is None:
        if was is None:
            return None, None, None
        if not os.path.exists(was):
            raise ConfigError(f"the run being resumed read {flag} {was}, which no longer exists. Pass {flag} with the "
                              f"same data (it is recognised by its content), or {ALLOW_FLAG} with {flag} to change it.")
        if recorded_print and fingerprint(was) != recorded_print:
            return was, {"setting": name, "was": f"{was} (as recorded)", "now": f"{was} (its content changed since)"}, None
        return was, None, None
    path = os.path.abspath(now)
    if not os.path.exists(path):
        raise ConfigError(f"{flag} {now} does not exist.")
    if was is None:
        return path, {"setting": name, "was": None, "now": path}, None
    if recorded_print and fingerprint(path) == recorded_print:
        note = None if path == was else f"note: {flag} {now} holds the same data as the recorded {was}; using it."
        return path, None, note
    if not recorded_print and path == was:
        return path, None, None
    return path, {"setting": name, "was": was, "now": path}, None
