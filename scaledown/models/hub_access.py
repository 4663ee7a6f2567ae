# Before loading a hub name: fail in seconds, naming the fix, when the hub cannot be reached and nothing is cached.
"""Without network, transformers/huggingface_hub retry for about 50 s before their (clear) error. Here a
TCP connection to the hub endpoint (HF_ENDPOINT, default huggingface.co:443) is tried once per process
with a PROBE_TIMEOUT_S limit (DNS included). Unreachable: a model in the local cache loads from it
(local_files_only); one not cached raises ConfigError at once. HF_HUB_OFFLINE=1 skips the probe (the
libraries then read only the cache and fail fast themselves); local folders and tiny sentinels never probe.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Any, Optional
from urllib.parse import urlparse

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id

from scaledown.errors import ConfigError

PROBE_TIMEOUT_S = 3.0
_reachable: dict[str, bool] = {}


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def endpoint() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable() -> bool:
    """Whether a TCP connection to the hub endpoint opens within PROBE_TIMEOUT_S (cached per endpoint)."""
    host, port = endpoint()
    key = f"{host}:{port}"
    if key not in _reachable:
        result = [False]

        def probe() -> None:
            try:
                socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
                result[0] = True
            except OSError:
                pass

        thread = threading.Thread(target=probe, daemon=True)   # getaddrinfo has no timeout of its own
        thread.start()
        thread.join(PROBE_TIMEOUT_S)
        _reachable[key] = result[0]
    return _reachable[key]


def _cached(name: str) -> bool:
    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    return isinstance(try_to_load_from_cache(name, "config.json", cache_dir=cache), str) or \
        isinstance(try_to_load_from_cache(name, "tokenizer_config.json", cache_dir=cache), str)


def _invalid_hub_name(name: str) -> Optional[str]:
    """Why `name` cannot be a hub repo id (huggingface_hub's own rule), or None when it can."""
    try:
        validate_repo_id(name)
    except HFValidationError as exc:
        return str(exc).splitlines()[0].rstrip(".")
    return None


def hub_kwargs(name: str, what: str = "model") -> dict[str, Any]:
    """from_pretrained keyword arguments for `name`: {} normally, {"local_files_only": True} when the hub cannot
    be reached but the files are cached; ConfigError (in seconds) when neither."""
    if os.path.exists(name):
        return {}
    not_a_name = _invalid_hub_name(name)
    if not_a_name:   # a mistyped path (/models/Qwen2-7B, ./bases/x): say so, not huggingface_hub's validation traceback
        raise ConfigError(f"the {what} '{name}' is not an existing folder (looked from {os.getcwd()}) and cannot be a "
                          f"Hugging Face hub name ({not_a_name}). Check the path, or give a hub id such as "
                          f"Qwen/Qwen2-7B-Instruct.")
    if _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE"):
        return {}
    if hub_reachable():
        return {}
    if _cached(name):
        return {"local_files_only": True}
    host, port = endpoint()
    raise ConfigError(no_network_message(name, what, f"{host}:{port}"))


def no_network_message(name: str, what: str, where: Optional[str] = None) -> str:
    return (f"the {what} '{name}' is a Hugging Face hub name that is not in the local cache, and the hub "
            f"({where or 'huggingface.co'}) cannot be reached (no connection within {PROBE_TIMEOUT_S:.0f} s). "
            f"Without a generator_model_name, a data file means Mistral-7B-Instruct-v0.2 from the hub. Download it "
            f"where there is network (`hf download {name}`, huggingface_hub's command) and copy the cache (HF_HOME), pass a local "
            f"folder, or try the offline tiny preset: --preset tiny.")
