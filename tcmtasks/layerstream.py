"""Streaming a layer into staging: what the in-layer manifest says (where each Triton key goes,
which parts the image holds), the names and sizes a member may have, and the copy of each
accepted member to the staging path its caller chooses. Anything else in a layer (``..``,
absolute names, links, devices, files over the caps, more members than the manifest ships,
data after the archive's end) stops the extraction: nothing is installed."""

from __future__ import annotations

import json
import re
import tarfile
import zlib
from collections.abc import Callable
from typing import Any

from . import parts as cache_parts
from .cache.groups import MAX_JSON
from .errors import HostileImage, ImageError, OversizeHeader, os_error
from .oci.image import Dest
from .oci.inspect import decompressed
from .oci.tarread import BLOCK, Chunks, Member, TarReader
from .restoreplan import PartPlan
from .stagewrite import Where, Writer

CACHE_PREFIX = "io.triton.cache/"
MANIFEST_PREFIX = "io.triton.manifest/"
MANIFEST_FILE = MANIFEST_PREFIX + "manifest.json"
MAX_FILE = 1 << 30  # no kernel file comes near 1 GiB
MAX_PART_FILE = 4 << 30  # an FX graph or vLLM artifact of a very large model
MAX_MANIFEST = 64 << 20
MAX_TOTAL = 64 << 30
MAX_DESTS = 1024  # places one entry may go: a vLLM rank each
PROGRESS_STEP = 1 << 20  # bytes between two calls of stream_into's progress
#: Tar members in one layer, whatever its manifest says: every header is parsed and counted
#: (a 7 MB layer once unpacked to 1,000,000 empty files)
MAX_MEMBERS = 2_000_000
#: What may follow a tar's end marker: its writer pads the last record (10 KiB for GNU tar)
MAX_TRAILING = 1 << 20
SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{8,128}")
SAFE_FILE = re.compile(r"[A-Za-z0-9_.+-][A-Za-z0-9_.+-]{0,254}")
#: io.triton.cache/<KEY>/<FILE>, both as above, in one match
_TRITON_NAME = re.compile(re.escape(CACHE_PREFIX) + f"({SAFE_KEY.pattern})/({SAFE_FILE.pattern})")
_FILE_OR_DIR = frozenset((b"0", b"\0", b"7", b"5"))  # Member.isfile() or .isdir()


class Layout:
    """What the in-layer manifest says: where each Triton key goes, and the parts."""

    def __init__(self) -> None:
        self.seen = False
        self.max_members = MAX_MEMBERS  # until the manifest says how many files it ships
        self.dests: dict[str, list[Dest]] = {}
        self.builds: dict[str, dict[str, str]] = {}  # key -> the build its warm recorded
        #: key -> its row (name, target, Triton version...): enough to skip it unstaged
        self.rows: dict[str, dict[str, Any]] = {}
        self.parts: dict[str, PartPlan] = {}  # by prefix

    def read(self, data: bytes, make_plan: Callable[[dict[str, Any]], PartPlan]) -> None:
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ImageError(f"the in-layer manifest is not JSON ({exc})") from None
        self.seen = True
        self.max_members = _member_limit(doc)
        if not isinstance(doc, dict):
            return  # the older MCV shape: a plain list of Triton rows
        for row in rows_of(doc):
            key = str(row.get("key") or row.get("dummy_key") or "")
            if isinstance(row.get("dests"), list):
                if len(row["dests"]) > MAX_DESTS:
                    raise HostileImage(
                        f"the in-layer manifest sends entry {key[:16]} to {len(row['dests'])} "
                        f"places (at most {MAX_DESTS}: one per vLLM rank)"
                    )
                self.dests[key] = [dest_of(d) for d in row["dests"]]
            self.builds[key] = build_of(row)
            self.rows[key] = row
        for p in doc.get("parts") or []:
            if not isinstance(p, dict) or p.get("kind") not in cache_parts.KINDS:
                raise HostileImage(f"the in-layer manifest names an unknown part: {p!r:.80}")
            plan = make_plan(p)
            self.parts[plan.prefix] = plan


def _member_limit(doc: Any) -> int:
    """How many tar members a layer may hold, from what its manifest says it ships: each
    Triton row's files, each part's files, a dir per entry and per part dir, and slack. The
    ceiling applies to manifests that do not say (MCV's rows list no files)."""
    rows = doc.get("triton") if isinstance(doc, dict) else doc
    if isinstance(doc, dict) and isinstance(rows, list) and isinstance(doc.get("helpers"), list):
        rows = rows + doc["helpers"]
    parts = doc.get("parts") if isinstance(doc, dict) else None
    declared = 0
    for row in rows if isinstance(rows, list) else []:
        files = row.get("files") if isinstance(row, dict) else None
        if not isinstance(files, list):
            return MAX_MEMBERS
        declared += len(files) + 1
    for p in parts if isinstance(parts, list) else []:
        files = p.get("files") if isinstance(p, dict) else None
        if not isinstance(files, int) or files < 0:
            return MAX_MEMBERS
        declared += files * (1 + cache_parts.MAX_DEPTH)  # each file's dirs at most
    return min(MAX_MEMBERS, declared + 1024)


def rows_of(doc: Any) -> list[dict[str, Any]]:
    """The Triton rows of an in-layer manifest: MCV's kernels, then tcm's C helpers."""
    if not isinstance(doc, dict):
        rows = doc if isinstance(doc, list) else []
    else:
        rows = [*(doc.get("triton") or []), *(doc.get("helpers") or [])]
    return [r for r in rows if isinstance(r, dict)]


def build_of(row: dict[str, Any]) -> dict[str, str]:
    """The build behind an entry's key, as its image row records it (tcm images since the
    build fields were added; empty for older images and MCV's)."""
    return {k: str(row[k]) for k in ("python", "triton_key", "ptxas", "hip_libdir") if row.get(k)}


def dest_of(value: Any) -> Dest:
    if (
        isinstance(value, list)
        and len(value) == 2
        and value[0] in ("triton", *cache_parts.KINDS)
        and isinstance(value[1], str)
        and (value[1] == "" or cache_parts.check_rel(value[1]))
    ):
        return (value[0], value[1])
    raise HostileImage(f"the in-layer manifest names a bad destination: {value!r:.80}")


def name_of(m: Member) -> str:
    name = m.name
    while name.startswith("./"):
        name = name[2:]
    if name.startswith("/") or ".." in name or "//" in name:  # else none of these holds
        parts = name.rstrip("/").split("/")
        if name.startswith("/") or ".." in parts or "" in parts[:-1]:
            raise HostileImage(f"layer entry {m.name!r} escapes the cache (absolute or '..')")
    if m.type not in _FILE_OR_DIR:
        kind = (
            "a symlink"
            if m.issym()
            else "a hard link"
            if m.islnk()
            else ("a device" if m.isdev() else "not a regular file")
        )
        raise HostileImage(f"layer entry {m.name!r} is {kind}; cache images hold only files")
    return name


def stream_into(
    source: Any,
    manifest: dict[str, Any],
    layout: Layout,
    place: Callable[[str, str, str, int], Where | None],
    *,
    max_total: int = MAX_TOTAL,
    progress: Callable[[int], None] | None = None,
    on_manifest: Callable[[bytes], None] | None = None,
    hold: Callable[[Where, bytes], bool] | None = None,
    writer: Writer,
) -> int:
    """Unpack every layer's members where ``place(area, first, rest, size)`` says (None: drop
    it); returns bytes written. ``hold(where, data)`` sees each Triton entry's JSON files
    (metadata, group) in memory first, and takes the ones it keeps unwritten (True). The
    layer's digest is checked at its end: on a mismatch everything staged is void."""
    total = 0
    members = 0
    copies = writer.copies
    part_prefixes = tuple(cache_parts.prefix_of(k) for k in cache_parts.KINDS)
    dir_prefixes = (CACHE_PREFIX, MANIFEST_PREFIX, *part_prefixes)
    told = 0  # what progress was last told: it hears every PROGRESS_STEP bytes, not each file
    for desc in manifest.get("layers", []):
        raw = source.open_blob(desc["digest"], desc.get("size"))
        chunks: Chunks | None = None
        try:
            chunks = Chunks(decompressed(raw, desc.get("mediaType", "")), raw)
            tar = TarReader(chunks)
            for m in tar:
                members += 1
                if members > layout.max_members:
                    raise HostileImage(
                        f"the layer holds more than {layout.max_members} members, more "
                        "than its manifest ships: nothing was installed"
                    )
                name = name_of(m)
                if m.type == b"5":  # a dir: made with the files below it
                    if not name.startswith(dir_prefixes) \
                            and name.rstrip("/") + "/" not in dir_prefixes:  # fmt: skip
                        raise HostileImage(f"layer entry {m.name!r} is outside the cache")
                    tar.skip(m)
                    continue
                if name == MANIFEST_FILE:
                    if m.size > MAX_MANIFEST:
                        raise HostileImage(f"the in-layer manifest is {m.size} bytes")
                    data = tar.read(m)
                    if on_manifest is not None:
                        on_manifest(data)
                    continue
                where = route(name, m, layout, place, part_prefixes)
                if total + m.size > max_total:
                    raise HostileImage(
                        f"the layer unpacks to more than {max_total} bytes (what the "
                        "image declares, or --max-size): nothing was installed"
                    )
                total += m.size
                if where is None:
                    tar.skip(m)
                    continue
                triton = name.startswith(CACHE_PREFIX)
                # a Triton file goes to tar as the layer holds it, when its header can
                # (TarReader.span): no new header, no copy of its bytes; only a name tar
                # reads as checked here (no "./" stripped: ``m.name is name``)
                record = None
                if copies and triton and m.name is name and where[1] == name[len(CACHE_PREFIX) :]:
                    record = tar.span(m)
                if hold is not None and triton and name.endswith(".json") and m.size <= MAX_JSON:
                    data = tar.read(m) if record is None else bytes(record[BLOCK : BLOCK + m.size])
                    if not hold(where, data):  # (a group is written once judged)
                        if record is None:
                            writer.write(where, (data,), m.size)
                        else:
                            writer.copy(where[0], record)
                elif record is not None:
                    writer.copy(where[0], record)
                else:
                    writer.write(where, tar.content(m), m.size)
                if progress and total - told >= PROGRESS_STEP:
                    progress(told := total)
            if progress and total != told:
                progress(told := total)
            trailing = 0
            for n in tar.rest():  # tar padding; the digest is checked once it is read
                trailing += n
                if trailing > MAX_TRAILING:
                    raise HostileImage(
                        f"the layer goes on for more than {MAX_TRAILING} bytes after the "
                        "archive's end: nothing was installed"
                    )
        except OversizeHeader as exc:
            raise HostileImage(f"the layer holds {exc}: nothing was installed") from None
        except (tarfile.TarError, EOFError, zlib.error) as exc:  # CorruptTar included
            raise ImageError(
                f"the layer of {source.describe()} is corrupt ({exc}); nothing was installed"
            ) from None
        except OSError as exc:
            if exc.filename is not None:  # a local write failed (disk full...): not the image
                raise os_error(exc, "write", exc.filename) from None
            raise ImageError(
                f"the layer of {source.describe()} is corrupt ({exc}); nothing was installed"
            ) from None
        finally:
            if chunks is not None:
                chunks.close()
            raw.close()
    return total


def route(
    name: str,
    m: Member,
    layout: Layout,
    place: Callable[[str, str, str, int], Where | None],
    part_prefixes: tuple[str, ...],
) -> Where | None:
    if name.startswith(CACHE_PREFIX):
        match = _TRITON_NAME.fullmatch(name)
        if match is None:
            raise HostileImage(f"layer entry {m.name!r} is not {CACHE_PREFIX}<KEY>/<FILE>")
        if m.size > MAX_FILE:
            raise HostileImage(f"layer entry {m.name!r} is {m.size} bytes, over the 1 GiB cap")
        return place(CACHE_PREFIX, match[1], match[2], m.size)
    for prefix in part_prefixes:
        if name.startswith(prefix):
            rel = name[len(prefix) :]
            if not layout.seen:
                raise HostileImage(f"layer entry {m.name!r} comes before the in-layer manifest")
            if prefix not in layout.parts:
                raise HostileImage(f"layer entry {m.name!r} belongs to no part the manifest names")
            if not cache_parts.check_rel(rel):
                raise HostileImage(f"layer entry {m.name!r} has a name tcm never writes")
            if m.size > MAX_PART_FILE:
                raise HostileImage(f"layer entry {m.name!r} is {m.size} bytes, over the cap")
            return place(prefix, "", rel, m.size)
    raise HostileImage(f"layer entry {m.name!r} is outside {CACHE_PREFIX} and the known parts")
