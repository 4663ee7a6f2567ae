# Former home of the checkpoint folder protocol: an alias kept only for branches written against it.
"""Everything moved to scaledown/checkpoint/folder_protocol.py (tags, `latest`, trainer_state.json, atomic commit,
retention); nothing in scaledown/ imports this module (tests/unit/test_folder_protocol.py checks)."""
from scaledown.checkpoint.folder_protocol import *  # noqa: F401,F403
