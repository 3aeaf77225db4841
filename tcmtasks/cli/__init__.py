"""``tcm``, the command line: thin over ``tcmtasks.ops`` (typer parses, rich renders).

One module per command group (as doit's ``cmd_*.py``): ``cache_cmds`` (index, list, show,
doctor, prune, gc), ``image_cmds`` (package, push, inspect), ``restore_cmds`` (gpu, pull,
extract), ``warm_cmd`` and ``track_cmd``; ``common`` holds the option sets they share and
``app`` the application and its error handling.
"""

from __future__ import annotations

from . import cache_cmds, image_cmds, restore_cmds, track_cmd, warm_cmd  # noqa: F401 (commands)
from .app import app, main

__all__ = ["app", "main"]
