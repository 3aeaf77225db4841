"""Hand-built images for the restore's hostile-input tests: a layer of chosen members under
chosen labels, and one real entry's members to build from."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from tcmtasks.oci.image import MT_LAYER, MT_MANIFEST, canonical
from tcmtasks.oci.layout import OciLayout
from tests.oci.test_image import build


def layer_files(store: OciLayout, layer: dict) -> dict[str, bytes]:
    with store.open_blob(layer["digest"]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """An uncompressed layer holding ``members`` in order, as regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def image_from(path: Path, members: dict[str, bytes], labels: dict[str, str],
            raw_layer: bytes | None = None) -> OciLayout:  # fmt: skip
    if raw_layer is None:
        raw_layer = tar_bytes(members)
    store = OciLayout(path, "v1", create=True)
    layer = store.add_blob_bytes(raw_layer, MT_LAYER["none"])
    config = store.add_blob_bytes(canonical({"config": {"Labels": labels}}), "application/json")
    store.put_manifest(
        canonical({"schemaVersion": 2, "mediaType": MT_MANIFEST,
                   "config": config.descriptor(), "layers": [layer.descriptor()]}),
        MT_MANIFEST,
    )  # fmt: skip
    return store


def entry_members(cache: Path, tmp_path: Path) -> tuple[str, dict[str, bytes], dict, dict]:
    """One real entry's members from a tcm image of ``cache``: (key, members, its manifest
    row, the image's labels)."""
    _, store = build(cache, tmp_path / "img")
    manifest = json.loads(store.manifest()[0])
    members = layer_files(store, manifest["layers"][0])
    doc = json.loads(members["io.triton.manifest/manifest.json"])
    row = next(r for r in doc["triton"] if r["backend"] == "cuda")
    key = row["key"]
    own = {n: d for n, d in members.items() if n.startswith(f"io.triton.cache/{key}/")}
    config = store.open_blob(manifest["config"]["digest"]).read()
    return key, own, row, json.loads(config)["config"]["Labels"]
