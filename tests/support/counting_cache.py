"""A FileCacheManager that records every lookup, so tests see hits as Triton itself decides them.

Enabled with TRITON_CACHE_MANAGER=tests.support.counting_cache:CountingCacheManager; events are
appended, one JSON line each, to $TCM_TEST_EVENTS. A "hit" is exactly Triton's rule: get_group
returned a group that still contains the metadata file (docs/cache-formats.md, "Groups and the hit
rule").
"""

import json
import os

from triton.runtime.cache import FileCacheManager


def _record(event: dict) -> None:
    path = os.environ.get("TCM_TEST_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(event) + "\n")


class CountingCacheManager(FileCacheManager):
    def get_group(self, filename):
        group = super().get_group(filename)
        if filename.endswith(".json"):
            hit = group is not None and filename in group
            _record({"event": "hit" if hit else "miss", "key": self.key, "file": filename})
        return group

    def put_group(self, filename, group):
        _record({"event": "store", "key": self.key, "file": filename})
        return super().put_group(filename, group)
