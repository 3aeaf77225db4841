"""registries.conf (v2), as podman and CRI-O read it (containers-registries.conf(5)): where a
``docker://`` pull really goes. The ``[[registry]]`` whose ``prefix`` matches the image most
specifically may rewrite its location, block it, or name ``[[registry.mirror]]`` endpoints
(pull-through caches; Spegel and Dragonfly present themselves so), tried in order before the
origin. A signature is still checked against the name the user asked for, whichever endpoint
answered.

The file: ``--registries-conf FILE``, else ``$CONTAINERS_REGISTRIES_CONF``, else
``$HOME/.config/containers/registries.conf`` if it exists, else
``/etc/containers/registries.conf``; for the last two also the ``*.conf`` drop-ins of the
``registries.conf.d`` directory beside it, a later prefix replacing an earlier one.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TrustConfigError, UntrustedImage, UsageError
from ..oci.refs import ImageRef, parse
from .names import ref_matches_prefix

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the 3.10 floor
    import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]

SYSTEM_CONF = Path("/etc/containers/registries.conf")
PULL_FROM = ("all", "digest-only", "tag-only")


@dataclass(frozen=True)
class Endpoint:
    """One place to pull from: ``ref`` rewritten to it, and how to reach it."""

    ref: ImageRef
    insecure: bool = False
    mirror: bool = False

    def describe(self) -> str:
        return f"{'mirror' if self.mirror else 'origin'} {self.ref.host}"


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from: str = "all"


@dataclass(frozen=True)
class Rule:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    source: str = ""


@dataclass
class RegistriesConf:
    rules: dict[str, Rule] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def rule_for(self, name: str) -> Rule | None:
        best: Rule | None = None
        for rule in self.rules.values():
            if rule.prefix.startswith("*."):
                host = name.split("/", 1)[0].split(":", 1)[0]
                ok = host.endswith(rule.prefix[1:])
                length = len(rule.prefix) - 1
            else:
                ok = ref_matches_prefix(name, rule.prefix)
                length = len(rule.prefix)
            if ok and (best is None or length > _length(best)):
                best = rule
        return best

    def endpoints(self, ref: ImageRef) -> list[Endpoint]:
        """Where to pull ``ref`` from, in order: its mirrors, then its (rewritten) origin."""
        if ref.transport != "docker":
            return [Endpoint(ref)]
        tail = f"@{ref.digest}" if ref.digest else f":{ref.tag}"
        full = f"{ref.host}/{ref.repo}{tail}"
        rule = self.rule_for(full)
        if rule is None:
            return [Endpoint(ref)]
        if rule.blocked:
            raise UntrustedImage(
                f"{ref.host}/{ref.repo} is blocked by registries.conf ({rule.source}, "
                f'prefix "{rule.prefix}"): pull it from a registry the node allows'
            )
        out = []
        for m in rule.mirrors:
            if m.pull_from == "digest-only" and not ref.digest:
                continue
            if m.pull_from == "tag-only" and ref.digest:
                continue
            out.append(Endpoint(_rewrite(full, rule, m.location, ref), m.insecure, mirror=True))
        out.append(Endpoint(_rewrite(full, rule, rule.location, ref), rule.insecure))
        return out


def _length(rule: Rule) -> int:
    return len(rule.prefix) - 1 if rule.prefix.startswith("*.") else len(rule.prefix)


def _rewrite(full: str, rule: Rule, location: str, ref: ImageRef) -> ImageRef:
    if rule.prefix.startswith("*."):  # a wildcard keeps the host's path, on the new host
        host, _, rest = full.partition("/")
        new = f"{location or host}/{rest}"
    else:
        new = location + full[len(rule.prefix) :]
    try:
        moved = parse("docker://" + new)
    except UsageError as exc:
        raise TrustConfigError(
            f"{rule.source}: location {location!r} gives {new!r}: {exc}"
        ) from None
    return ImageRef("docker", host=moved.host, repo=moved.repo, tag=ref.tag, digest=ref.digest)


def conf_files(explicit: Path | None = None) -> list[Path]:
    if explicit is not None:
        if not explicit.is_file():
            raise TrustConfigError(f"registries.conf {explicit} does not exist")
        return [explicit]
    env = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    if env:
        return [Path(env)] if Path(env).is_file() else []
    user = Path.home() / ".config" / "containers" / "registries.conf"
    main = user if user.is_file() else SYSTEM_CONF
    files = [main] if main.is_file() else []
    dropins = main.parent / "registries.conf.d"
    if dropins.is_dir():
        files += sorted(dropins.glob("*.conf"))
    return files


def load(explicit: Path | None = None) -> RegistriesConf:
    conf = RegistriesConf()
    for path in conf_files(explicit):
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise TrustConfigError(f"registries.conf {path} does not parse: {exc}") from None
        if isinstance(doc.get("registries"), dict):
            raise TrustConfigError(
                f"{path} is in the v1 format ([registries.*] tables); tcm reads v2 "
                "([[registry]] tables): convert it as containers-registries.conf(5) shows"
            )
        conf.files.append(str(path))
        for i, raw in enumerate(doc.get("registry") or []):
            rule = _rule(raw, f"{path}: registry[{i}]")
            conf.rules[rule.prefix] = rule
    return conf


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise TrustConfigError(f"{where} is not a table")
    prefix = str(raw.get("prefix") or raw.get("location") or "")
    location = str(raw.get("location") or "")
    if not prefix:
        raise TrustConfigError(f"{where} needs a prefix or a location")
    if prefix.startswith("*.") and location:
        raise TrustConfigError(f"{where}: a wildcard prefix ({prefix}) cannot set a location")
    if not location and not prefix.startswith("*."):
        location = prefix
    digest_only = bool(raw.get("mirror-by-digest-only", False))
    mirrors = []
    for j, m in enumerate(raw.get("mirror") or []):
        if not isinstance(m, dict) or not m.get("location"):
            raise TrustConfigError(f"{where}.mirror[{j}] needs a location")
        pull_from = str(m.get("pull-from-mirror") or ("digest-only" if digest_only else "all"))
        if pull_from not in PULL_FROM:
            raise TrustConfigError(
                f"{where}.mirror[{j}]: pull-from-mirror {pull_from!r} is not one of "
                + ", ".join(PULL_FROM)
            )
        mirrors.append(Mirror(str(m["location"]), bool(m.get("insecure", False)), pull_from))
    return Rule(
        prefix, location, bool(raw.get("insecure", False)), bool(raw.get("blocked", False)),
        tuple(mirrors), where.split(":")[0],
    )  # fmt: skip
