"""containers' policy.json, read as podman, skopeo and CRI-O read it (containers-policy.json(5)):
which requirements an image must meet, chosen by transport and the most specific scope.

Where it is looked for: ``--policy FILE``, else ``$HOME/.config/containers/policy.json``, else
``/etc/containers/policy.json``. With none of them, tcm installs what it is given, as before,
and says so once (``notice_no_policy``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TrustConfigError
from ..oci.refs import ImageRef
from .identity import Identity, parse_identity
from .names import docker_scopes, local_scopes, name_of

log = logging.getLogger("tcm")

SYSTEM_POLICY = Path("/etc/containers/policy.json")
TYPES = ("insecureAcceptAnything", "reject", "signedBy", "sigstoreSigned")
# Parts of sigstoreSigned tcm does not verify (keyless certificates, transparency logs): a
# policy naming them is refused rather than half-checked.
UNSUPPORTED_SIGSTORE = ("fulcio", "rekorPublicKeyPath", "rekorPublicKeyData", "pki")


@dataclass(frozen=True)
class Requirement:
    """One policy requirement. ``keys``: the key material (GPG keyrings for ``signedBy``,
    PEM public keys for ``sigstoreSigned``), each with where it came from."""

    type: str
    keys: tuple[tuple[str, bytes], ...] = ()
    identity: Identity = field(default_factory=Identity)

    @property
    def needs_signatures(self) -> bool:
        return self.type in ("signedBy", "sigstoreSigned")

    def describe(self) -> str:
        if not self.needs_signatures:
            return self.type
        where = ", ".join(src for src, _ in self.keys)
        return f"{self.type} ({where}; identity {self.identity.kind})"


@dataclass(frozen=True)
class Policy:
    default: tuple[Requirement, ...]
    transports: dict[str, dict[str, tuple[Requirement, ...]]]
    source: str

    def requirements_for(self, ref: ImageRef) -> tuple[str, tuple[Requirement, ...]]:
        """The requirements an image must meet, and the scope that chose them."""
        scopes = self.transports.get(ref.transport, {})
        names = docker_scopes(name_of(ref)) if ref.transport == "docker" else local_scopes(ref)
        for scope in names:
            if scope in scopes:
                return f'transports.{ref.transport}["{scope}"]', scopes[scope]
        if "" in scopes:
            return f'transports.{ref.transport}[""]', scopes[""]
        return "default", self.default


def find_policy(explicit: Path | None = None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise TrustConfigError(f"policy file {explicit} does not exist")
        return explicit
    user = Path.home() / ".config" / "containers" / "policy.json"
    for path in (user, SYSTEM_POLICY):
        if path.is_file():
            return path
    return None


def load_policy(path: Path) -> Policy:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrustConfigError(f"policy {path} cannot be read as JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise TrustConfigError(f"policy {path} is not a JSON object")
    unknown = set(doc) - {"default", "transports"}
    if unknown:
        raise TrustConfigError(f"policy {path}: unknown key(s) {', '.join(sorted(unknown))}")
    if "default" not in doc:
        raise TrustConfigError(
            f'policy {path} has no "default" requirements (containers needs one)'
        )
    base = path.parent
    default = _requirements(doc["default"], f"{path}: default", base)
    transports: dict[str, dict[str, tuple[Requirement, ...]]] = {}
    raw = doc.get("transports") or {}
    if not isinstance(raw, dict):
        raise TrustConfigError(f"policy {path}: transports is not an object")
    for transport, scopes in raw.items():
        if not isinstance(scopes, dict):
            raise TrustConfigError(f"policy {path}: transports.{transport} is not an object")
        transports[transport] = {
            scope: _requirements(reqs, f'{path}: transports.{transport}["{scope}"]', base)
            for scope, reqs in scopes.items()
        }
    return Policy(default, transports, str(path))


def _requirements(obj: Any, where: str, base: Path) -> tuple[Requirement, ...]:
    if not isinstance(obj, list) or not obj:
        raise TrustConfigError(f"{where}: requirements must be a non-empty list")
    return tuple(_requirement(r, f"{where}[{i}]", base) for i, r in enumerate(obj))


def _requirement(obj: Any, where: str, base: Path) -> Requirement:
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind not in TYPES:
        raise TrustConfigError(
            f"{where}: unknown requirement type {kind!r}; policy.json knows {', '.join(TYPES)}"
        )
    assert isinstance(obj, dict)
    if kind in ("insecureAcceptAnything", "reject"):
        if set(obj) != {"type"}:
            raise TrustConfigError(f"{where}: {kind} takes no other keys")
        return Requirement(kind)
    allowed = {"type", "keyPath", "keyPaths", "keyData", "signedIdentity"}
    if kind == "signedBy":
        allowed.add("keyType")
        if obj.get("keyType") != "GPGKeys":
            raise TrustConfigError(
                f"{where}: signedBy keyType {obj.get('keyType')!r} is not supported; use GPGKeys"
            )
    else:
        named = [k for k in UNSUPPORTED_SIGSTORE if k in obj]
        if named:
            raise TrustConfigError(
                f"{where}: sigstoreSigned with {', '.join(named)} is not supported by tcm "
                "(keyless and transparency-log checks); verify with keyPath or keyData"
            )
    extra = set(obj) - allowed
    if extra:
        raise TrustConfigError(f"{where}: {kind} has unknown key(s) {', '.join(sorted(extra))}")
    return Requirement(
        kind, _keys(obj, where, base), parse_identity(obj.get("signedIdentity"), where)
    )


def _keys(obj: dict[str, Any], where: str, base: Path) -> tuple[tuple[str, bytes], ...]:
    given = [k for k in ("keyPath", "keyPaths", "keyData") if k in obj]
    if len(given) != 1:
        raise TrustConfigError(f"{where}: give exactly one of keyPath, keyPaths, keyData")
    if given[0] == "keyData":
        try:
            return (("keyData", base64.b64decode(str(obj["keyData"]), validate=True)),)
        except ValueError:
            raise TrustConfigError(f"{where}: keyData is not base64") from None
    paths = [obj["keyPath"]] if given[0] == "keyPath" else obj["keyPaths"]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or not paths:
        raise TrustConfigError(f"{where}: {given[0]} must name key files")
    keys = []
    for p in paths:
        path = base / os.path.expanduser(p)
        try:
            keys.append((str(path), path.read_bytes()))
        except OSError as exc:
            raise TrustConfigError(f"{where}: key file {path}: {exc.strerror}") from None
    return tuple(keys)


def notice_no_policy() -> None:
    """Say once per user (a marker under ``$XDG_STATE_HOME/tcm``) that nothing is verified."""
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "tcm"
    marker = state / "no-policy-notice"
    if marker.exists():
        return
    log.warning(
        "no containers policy.json (%s or ~/.config/containers/policy.json): images are "
        "installed unverified; write one, or pass --policy FILE, to require signatures",
        SYSTEM_POLICY,
    )
    try:
        state.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass  # said again next time: better than not at all
