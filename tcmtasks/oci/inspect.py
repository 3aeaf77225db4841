"""What an image holds, from its manifest, config and the head of its layer only.

The in-layer manifest is the first file of a layer tcm built, so ``inspect`` decompresses the
stream until that member and stops: a registry transfer is cut off after a few kilobytes,
however large the cache. Images built elsewhere (an engine sorts the cache dir first) are
streamed until the member turns up; nothing is written to disk either way.
"""

from __future__ import annotations

import gzip
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any

from ..errors import ImageError, MissingDependency
from .image import LABEL_COUNT, LABEL_GPUS, LABEL_PRODUCER, LABEL_SIZE, LABEL_SUMMARY
from .layout import SafeTarInfo, check_doc_size, parse_manifest, read_doc

MANIFEST_NAMES = ("io.triton.manifest/manifest.json",)


def decompressed(stream: Any, media_type: str) -> Any:
    if media_type.endswith("gzip"):
        try:  # ISA-L inflates a layer in half zlib's time (bench/RESULTS.md)
            from isal import igzip
        except ImportError:
            return gzip.GzipFile(fileobj=stream, mode="rb")
        return igzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[no-untyped-call]
    if media_type.endswith("zstd"):
        try:
            import zstandard
        except ImportError:
            raise MissingDependency("zstandard (to read zstd layers)", "zstd") from None
        return zstandard.ZstdDecompressor().stream_reader(stream)
    return stream


def read_labels(source: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(manifest, config, labels) of an image, without touching its layers."""
    data, _ = source.manifest()
    manifest = parse_manifest(data, f"manifest of {source.describe()}")
    cdesc = manifest.get("config")
    if not isinstance(cdesc, dict) or not isinstance(cdesc.get("digest"), str):
        raise ImageError(f"the manifest of {source.describe()} names no config: not an image")
    check_doc_size(cdesc.get("size"), "the image config")
    with source.open_blob(cdesc["digest"], cdesc.get("size")) as f:
        config = parse_manifest(read_doc(f, "the image config"), "image config")
    inner = config.get("config")
    labels = (inner.get("Labels") if isinstance(inner, dict) else None) or manifest.get(
        "annotations"
    )
    # labels are strings to strings; anything else in them is ignored, never trusted
    clean = {str(k): v for k, v in labels.items() if isinstance(v, str)} if isinstance(
        labels, dict
    ) else {}  # fmt: skip
    return manifest, config, clean


def read_entry_manifest(source: Any, manifest: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The in-layer entry table (both MCV shapes: a plain list, or {"triton": [...]})."""
    data = read_layer_manifest(source, manifest)
    rows = data.get("triton", []) if isinstance(data, dict) else data
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else None


#: The in-layer manifest is read into memory: refuse one larger than a huge cache's.
MAX_LAYER_MANIFEST = 64 << 20


def read_layer_manifest(source: Any, manifest: dict[str, Any]) -> Any:
    """The whole in-layer manifest (a list in older MCV images, else a dict with ``triton``
    and, from tcm, ``parts``), read from the head of the layer; None if there is none."""
    for layer in manifest.get("layers", []):
        raw = source.open_blob(layer["digest"], layer.get("size"))
        try:
            stream = decompressed(raw, layer.get("mediaType", ""))
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=SafeTarInfo) as tar:
                for member in tar:
                    name = member.name.lstrip("./")
                    if name in MANIFEST_NAMES and member.isfile():
                        if member.size > MAX_LAYER_MANIFEST:
                            raise ImageError(
                                f"the in-layer manifest of {source.describe()} is "
                                f"{member.size} bytes: not a cache image tcm reads"
                            )
                        f = tar.extractfile(member)
                        return json.loads(f.read()) if f else None
        except (tarfile.TarError, OSError, EOFError, ValueError, RecursionError) as exc:
            raise ImageError(f"cannot read the layer of {source.describe()}: {exc}") from None
        finally:
            try:
                raw.raw.close()  # stop the download; the digest is not checked on a partial read
            except AttributeError:
                raw.close()
    return None


@dataclass
class ImageInfo:
    """What an image says about itself: labels, targets, producer, and the in-layer table."""

    reference: str
    media_type: str | None
    layers: list[dict[str, Any]]
    labels: dict[str, str]
    entry_count: int | None
    cache_size_bytes: int | None
    targets: list[dict[str, Any]]
    producer: dict[str, Any] | None
    entries: list[dict[str, Any]] | None = None
    #: Triton's C helpers (cuda_utils, launchers): the in-layer manifest's own list
    helpers: list[dict[str, Any]] = field(default_factory=list)
    parts: list[dict[str, Any]] = field(default_factory=list)  # Inductor's, vLLM's
    #: the GPUs an image warmed for a fleet serves: name -> target, units per part, entries
    gpus: dict[str, dict[str, Any]] = field(default_factory=dict)
    runtime: dict[str, Any] | None = None  # what ``skip`` in each entry was judged for

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _int_label(labels: dict[str, str], name: str) -> int | None:
    value = labels.get(name, "")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def inspect(source: Any, *, entries: bool = True) -> ImageInfo:
    manifest, _config, labels = read_labels(source)
    summary = json_label(labels.get(LABEL_SUMMARY))
    producer = json_label(labels.get(LABEL_PRODUCER))
    targets = summary.get("targets", []) if isinstance(summary, dict) else []
    info = ImageInfo(
        reference=source.describe(),
        media_type=manifest.get("mediaType"),
        layers=[
            {"digest": d["digest"], "size": d.get("size"), "mediaType": d.get("mediaType")}
            for d in manifest.get("layers", [])
        ],
        labels=labels,
        entry_count=_int_label(labels, LABEL_COUNT),
        cache_size_bytes=_int_label(labels, LABEL_SIZE),
        targets=[t for t in targets if isinstance(t, dict)],
        producer=producer if isinstance(producer, dict) else None,
    )
    gpus = json_label(labels.get(LABEL_GPUS))
    if isinstance(gpus, dict):
        info.gpus = {str(k): v for k, v in gpus.items() if isinstance(v, dict)}
    if entries:
        data = read_layer_manifest(source, manifest)
        rows = data.get("triton", []) if isinstance(data, dict) else data
        info.entries = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
        if isinstance(data, dict) and isinstance(data.get("parts"), list):
            info.parts = [p for p in data["parts"] if isinstance(p, dict)]
        if isinstance(data, dict) and isinstance(data.get("helpers"), list):
            info.helpers = [h for h in data["helpers"] if isinstance(h, dict)]
    return info


def json_label(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        return None
