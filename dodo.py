"""doit pipelines: `doit warm_and_ship model=triton-tutorials` (every model without model=).

Thin by design: the tasks come from tcmtasks.pipeline (recipes: ./pipelines/ when present,
else the examples shipped in tcmtasks/data/pipelines/). `doit list` shows every task;
`registry=HOST[:PORT][/ORG]` pushes to a registry instead of the local OCI layout under
build/images; `dry_run=1` shows what would run. An installed tcm runs the same with
`python -m tcmtasks.pipeline`.
"""

from tcmtasks.pipeline.dodo import namespace

globals().update(namespace())
