"""vLLM's compile cache: ``<VLLM_CACHE_ROOT>/torch_compile_cache/<hash>/rank_<r>_<dp>/`` with
``vllm_compile_cache.py``, ``inductor_cache/`` (an Inductor dir) and ``triton_cache/`` (a
Triton cache, in older layouts); newer versions add other artifact dirs, shipped as found.

Paths: ``vllm_compile_cache.py`` is a Python literal mapping each compiled shape to an Inductor
hash and the ABSOLUTE path of its generated code under the producer's cache root. MCV ships it
as is, which works only when the node mounts the cache at the producer's path; tcm rewrites
the paths under the producer's root to the node's (parsed as a literal, never executed), and
skips the file with a reason when it cannot be parsed (``--same-paths`` restores to the
producer's path instead).
"""

from __future__ import annotations

import ast
import os
import pprint
from pathlib import Path
from typing import Any

COMPILE_CACHE = "torch_compile_cache"
INDEX_FILE = "vllm_compile_cache.py"


def locate(path: Path) -> tuple[Path, str] | None:
    """(base, mount): the vLLM cache root itself, or a ``torch_compile_cache/<hash>`` dir,
    or one of its rank dirs (mount says where it sits under the root)."""
    if (path / COMPILE_CACHE).is_dir():
        return path, ""
    if path.name == COMPILE_CACHE:
        return path, COMPILE_CACHE
    if path.parent.name == COMPILE_CACHE and any(_ranks(path)):
        return path, f"{COMPILE_CACHE}/{path.name}"
    if path.name.startswith("rank_") and path.parent.parent.name == COMPILE_CACHE:
        return path, f"{COMPILE_CACHE}/{path.parent.name}/{path.name}"
    return None


def _ranks(hashdir: Path) -> list[Path]:
    try:
        return [p for p in hashdir.iterdir() if p.name.startswith("rank_") and p.is_dir()]
    except OSError:
        return []


def triton_roots(base: Path) -> list[str]:
    """Triton caches inside: each rank's ``triton_cache`` and ``inductor_cache/triton/<dev>``."""
    found = []
    for dirpath, dirs, _files in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(dirpath, d)))
        here = Path(dirpath)
        legacy = here.name == "triton_cache" and here.parent.name.startswith("rank_")
        inside = here.parent.name == "triton" and here.parent.parent.name == "inductor_cache"
        if legacy or inside:
            found.append(os.path.relpath(here, base))
            dirs[:] = []
    return sorted(p.replace(os.sep, "/") for p in found)


def default_dest() -> Path:
    """Where the workload's vLLM looks: VLLM_CACHE_ROOT, else ~/.cache/vllm."""
    env = os.environ.get("VLLM_CACHE_ROOT")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vllm"


def relocate(staged: Path, rel: str, old_root: str, new_root: Path) -> str | None:
    """Rewrite the producer's root to the node's in ``vllm_compile_cache.py``; the reason it
    cannot be, or None."""
    if Path(rel).name != INDEX_FILE or not old_root:
        return None
    try:
        data = index_bytes(staged)
        if isinstance(data, str):  # over a bound: why
            return f"{rel} {data}; use --same-paths to restore it unparsed at the producer's path"
        table = ast.literal_eval(ast.parse(data.decode("utf-8"), mode="eval"))
        fixed = _replace(table, old_root.rstrip("/") + "/", str(new_root).rstrip("/") + "/")
    except (OSError, UnicodeDecodeError, ValueError, TypeError, SyntaxError, MemoryError,
            RecursionError) as exc:  # fmt: skip
        return f"cannot read {rel} as a Python literal ({exc.__class__.__name__}); use --same-paths"
    if fixed != table:
        staged.write_text(pprint.pformat(fixed) + "\n", encoding="utf-8")
    return None


#: vLLM's index maps a few hundred (shape, graph, backend) tuples to a hash and a path: a
#: large model's is kilobytes. Bounds far above that keep a hostile one from taking the node's
#: memory: parsing a 10 MB list of ints peaked at 4.9 GB (every token is an AST node).
MAX_INDEX_BYTES = 4 << 20
MAX_INDEX_TOKENS = 200_000


def index_bytes(path: Path) -> bytes | str:
    """``vllm_compile_cache.py``'s bytes, or why they are not parsed: over the size or token
    bound, checked before any AST is built (``tokenize`` streams; the parser does not)."""
    import io
    import tokenize

    with open(path, "rb") as f:
        data = f.read(MAX_INDEX_BYTES + 1)
    if len(data) > MAX_INDEX_BYTES:
        return f"is over {MAX_INDEX_BYTES >> 20} MiB"
    for n, _tok in enumerate(tokenize.tokenize(io.BytesIO(data).readline)):
        if n > MAX_INDEX_TOKENS:
            return f"holds over {MAX_INDEX_TOKENS} tokens"
    return data


def _replace(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return new + value[len(old) :] if value.startswith(old) else value
    if isinstance(value, dict):
        return {_replace(k, old, new): _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_replace(v, old, new) for v in value]
        return type(value)(items)
    return value
