"""Where GPG signatures live: the lookaside stores of registries.d (containers-registries.d(5)).

A store is a URL (``file://``, ``http://``, ``https://``); the signatures of manifest
``sha256:HEX`` of ``HOST/REPO`` are ``<store>/REPO@sha256=HEX/signature-1``, ``-2``, ... read in
order until one is missing. Signing writes to ``lookaside-staging`` (else ``lookaside``), which
must be ``file://``: a web server in front of that directory publishes them, as with skopeo.

The directory: ``--registries-d DIR``, else ``$HOME/.config/containers/registries.d`` if it
exists, else ``/etc/containers/registries.d``; every ``*.yaml`` in it. Per docker namespace
(most specific first, then ``default-docker``): ``lookaside``/``lookaside-staging`` (and their
old names ``sigstore``/``sigstore-staging``) and ``use-sigstore-attachments``.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ImageError, TrustConfigError
from .names import DockerName, docker_scopes

SYSTEM_DIR = Path("/etc/containers/registries.d")
MAX_SIGNATURE = 4 << 20  # containers/image's own cap on one signature
MAX_SIGNATURES = 128
ALIASES = {"sigstore": "lookaside", "sigstore-staging": "lookaside-staging"}
FIELDS = ("lookaside", "lookaside-staging", "use-sigstore-attachments")


@dataclass(frozen=True)
class Stores:
    read: str | None = None
    write: str | None = None
    attachments: bool = False


def registries_dir(explicit: Path | None = None) -> Path:
    if explicit is not None:
        if not explicit.is_dir():
            raise TrustConfigError(f"registries.d directory {explicit} does not exist")
        return explicit
    user = Path.home() / ".config" / "containers" / "registries.d"
    return user if user.is_dir() else SYSTEM_DIR


def stores_for(name: DockerName, directory: Path | None = None) -> Stores:
    default, namespaces = _load(registries_dir(directory))
    chosen: dict[str, Any] = {}
    for scope in docker_scopes(name):
        for k, v in namespaces.get(scope, {}).items():
            chosen.setdefault(k, v)
    for k, v in default.items():
        chosen.setdefault(k, v)
    read = chosen.get("lookaside")
    write = chosen.get("lookaside-staging") or read
    return Stores(read, write, bool(chosen.get("use-sigstore-attachments")))


def _load(directory: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    default: dict[str, Any] = {}
    namespaces: dict[str, dict[str, Any]] = {}
    files = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    if files:  # (imported here: every restore loads this module, few nodes have these files)
        import yaml
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TrustConfigError(f"registries.d file {f} does not parse: {exc}") from None
        if not isinstance(doc, dict):
            raise TrustConfigError(f"registries.d file {f} is not a mapping")
        if "default-docker" in doc:
            if default:
                raise TrustConfigError(f"{f}: default-docker is set in another file too")
            default = _fields(doc["default-docker"], f"{f}: default-docker")
        for ns, conf in (doc.get("docker") or {}).items():
            if ns in namespaces:
                raise TrustConfigError(f"{f}: docker namespace {ns} is set in another file too")
            namespaces[ns] = _fields(conf, f"{f}: docker.{ns}")
    return default, namespaces


def _fields(conf: Any, where: str) -> dict[str, Any]:
    if conf is None:
        return {}
    if not isinstance(conf, dict):
        raise TrustConfigError(f"{where} is not a mapping")
    out = {}
    for k, v in conf.items():
        key = ALIASES.get(k, k)
        if key in FIELDS:
            out[key] = v
    return out


def signature_url(store: str, name: DockerName, digest: str, index: int) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{store.rstrip('/')}/{name.path}@{algo}={hexpart}/signature-{index}"


def read_signatures(store: str, name: DockerName, digest: str) -> list[bytes]:
    """Every signature the store holds for ``digest`` of ``name``."""
    found = []
    for i in range(1, MAX_SIGNATURES + 1):
        data = _get(signature_url(store, name, digest, i))
        if data is None:
            break
        found.append(data)
    return found


def _get(url: str) -> bytes | None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
        try:
            with path.open("rb") as f:
                return _capped(f.read(MAX_SIGNATURE + 1), url)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ImageError(f"cannot read signature {path}: {exc.strerror}") from None
    if parsed.scheme not in ("http", "https"):
        raise TrustConfigError(f"lookaside {url}: use file://, http:// or https://")
    from urllib import error as url_error  # (imported here: most stores are file://)
    from urllib import request as url_request

    try:
        with url_request.urlopen(url, timeout=30) as resp:
            return _capped(resp.read(MAX_SIGNATURE + 1), url)
    except url_error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise ImageError(f"lookaside {url} answered {exc.code} {exc.reason}") from None
    except (url_error.URLError, OSError) as exc:
        raise ImageError(f"cannot reach lookaside {url}: {exc}") from None


def _capped(data: bytes, url: str) -> bytes:
    if len(data) > MAX_SIGNATURE:
        raise ImageError(f"signature {url} is over {MAX_SIGNATURE >> 20} MiB: not a signature")
    return data


def write_signature(store: str, name: DockerName, digest: str, signature: bytes) -> Path:
    """Add ``signature`` after those the store has for ``digest`` (the same bytes twice are
    kept once); returns the file written."""
    parsed = urllib.parse.urlsplit(store)
    if parsed.scheme != "file":
        raise TrustConfigError(
            f"lookaside-staging {store} must be a file:// directory to write signatures to"
        )
    base = Path(urllib.parse.unquote(parsed.path))
    for i in range(1, MAX_SIGNATURES + 1):
        path = Path(urllib.parse.unquote(signature_url(f"file://{base}", name, digest, i)[7:]))
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(signature)
            tmp.replace(path)
            return path
        if path.read_bytes() == signature:
            return path
    raise ImageError(f"{base} holds {MAX_SIGNATURES} signatures for {name}@{digest} already")
