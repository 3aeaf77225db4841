"""``python -m tcmtasks.pipeline [doit arguments]``: doit over the shipped pipeline, for an
installed tcm with no dodo.py around."""

from __future__ import annotations

import sys
from typing import Any

from doit.cmd_base import NamespaceTaskLoader
from doit.doit_cmd import DoitMain

from .dodo import namespace


class PipelineLoader(NamespaceTaskLoader):  # type: ignore[misc]
    def setup(self, opt_values: Any) -> None:
        self.namespace = namespace()  # now: doit has read model=... and friends


def main() -> int:
    return int(DoitMain(PipelineLoader()).run(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
