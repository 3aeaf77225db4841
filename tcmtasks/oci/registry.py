"""A small OCI distribution-spec client: push, pull, mount, auth, TLS, retries.

Written here rather than taken from oras-py because tcm needs what that client does not give
together (docs/cache-formats.md, "Registries"): a manifest PUT whose Content-Type is exactly the
manifest's mediaType; an Accept list with both OCI and Docker types (distribution answers 404 to a
Docker-only Accept for an OCI manifest); POST-then-PUT uploads (no single-request POST-with-digest
on distribution 2.8) with ``&digest=`` appended to a Location that already has a query; a new
Location after every PATCH and ``Content-Range`` on chunks for stricter registries; cross-repository
mounts; and digest and size checks on every byte streamed, with no layer held in memory. It is
stdlib-only (urllib, ssl), so it runs wherever tcm does.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import AuthError, ImageError, RegistryError, UploadSessionLost
from .image import MT_INDEX, MT_MANIFEST
from .layout import (
    CHUNK,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    VerifyingReader,
    check_doc_size,
    read_doc,
    resolve_index,
)

log = logging.getLogger(__name__)

ACCEPT = ", ".join((MT_MANIFEST, MT_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
RETRIES = 4
TIMEOUT = 60.0  # seconds a connect or a read may wait before it is retried
BACKOFF = 0.5  # seconds, doubled per attempt
DEFAULT_CHUNK = 16 << 20  # uploads above this go in PATCH chunks of this size


def _auth_files() -> list[Path]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    home = Path.home()
    files.append(home / ".config" / "containers" / "auth.json")
    docker = Path(os.environ.get("DOCKER_CONFIG", home / ".docker"))
    files.append(docker / "config.json")
    return files


def credentials_for(host: str) -> tuple[str, str] | None:
    """(user, password) for a registry, found as skopeo and podman find them:
    TCM_REGISTRY_USER/TCM_REGISTRY_PASSWORD when TCM_REGISTRY_HOST names this host (they go
    to no other: a reference to any host must not receive them); else the first auth file
    (REGISTRY_AUTH_FILE, containers auth.json, ~/.docker/config.json) with an entry for the
    host: its credential helper (``credHelpers``, else ``credsStore``) when it names one, else
    its inline ``auth``."""
    user, password = os.environ.get("TCM_REGISTRY_USER"), os.environ.get("TCM_REGISTRY_PASSWORD")
    scope = {h.strip().lower() for h in os.environ.get("TCM_REGISTRY_HOST", "").split(",")}
    if user and password is not None:
        if host.lower() in scope:
            return user, password
        if not scope - {""}:
            log.warning(
                "TCM_REGISTRY_USER/TCM_REGISTRY_PASSWORD are set but TCM_REGISTRY_HOST is not: "
                "they are not sent to %s (set TCM_REGISTRY_HOST=%s to use them there)",
                host,
                host,
            )
    for path in _auth_files():
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, RecursionError):
            continue
        if not isinstance(config, dict):
            continue
        helper = (config.get("credHelpers") or {}).get(host) or config.get("credsStore")
        if isinstance(helper, str) and helper:
            found = _from_helper(helper, host)
            if found is not None:
                return found
        for key, value in (config.get("auths") or {}).items():
            name = re.sub(r"^https?://", "", key).split("/", 1)[0]
            if name == host and isinstance(value, dict) and value.get("auth"):
                try:
                    u, _, p = base64.b64decode(value["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    continue
                return u, p
    return None


def _from_helper(helper: str, host: str) -> tuple[str, str] | None:
    """``docker-credential-<helper> get``, the host on stdin (the protocol docker, podman and
    skopeo use); None when the helper is missing or knows nothing for the host."""
    import shutil
    import subprocess

    exe = shutil.which(f"docker-credential-{helper}")
    if exe is None:
        log.info("credential helper docker-credential-%s is not installed", helper)
        return None
    try:
        proc = subprocess.run([exe, "get"], input=host, capture_output=True, text=True, timeout=30)
        data = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and data.get("Username") and data.get("Secret") is not None:
        return str(data["Username"]), str(data["Secret"])
    return None


#: Redirects followed for one request (cloud registries send blob GETs to object storage once).
MAX_REDIRECTS = 5
#: Headers that carry credentials: never sent to another origin.
CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie")


def _origin(url: str) -> tuple[str, str, int]:
    u = urllib.parse.urlsplit(url)
    return u.scheme, (u.hostname or "").lower(), u.port or (443 if u.scheme == "https" else 80)


def _netloc(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return u.netloc.lower()


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow a registry's redirects as docker, containerd and skopeo do: credentials go only
    to the origin (scheme, host, port) they were meant for, a redirect from https to http is
    refused unless its host is an ``--insecure-host``, and a chain longer than
    ``MAX_REDIRECTS`` (a loop) stops with a message. urllib's own handler would copy the
    ``Authorization`` header to wherever the registry points (object storage, for blobs on
    ECR, GCR, Docker Hub), handing a token or a password to another host."""

    max_redirections = MAX_REDIRECTS + 1
    max_repeats = MAX_REDIRECTS + 1  # our own count below speaks first, with a message

    def __init__(self, insecure_hosts: list[str]):
        self.insecure_hosts = {h.lower() for h in insecure_hosts}

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        hops = getattr(req, "redirect_dict", {})
        if sum(hops.values()) >= MAX_REDIRECTS:
            raise RegistryError(
                f"{_safe_url(req.full_url)} redirected more than {MAX_REDIRECTS} times (a loop?): "
                "the registry or its storage is misconfigured"
            )
        old, new = _origin(req.full_url), _origin(newurl)
        if old[0] == "https" and new[0] != "https" and _netloc(newurl) not in self.insecure_hosts:
            raise RegistryError(
                f"{_safe_url(req.full_url)} redirected to plain HTTP ({_safe_url(newurl)}): "
                f"refused; name the host with --insecure-host {_netloc(newurl)} if you trust it"
            )
        out = super().redirect_request(req, fp, code, msg, headers, newurl)
        if out is not None and new != old:
            for name in CREDENTIAL_HEADERS:
                out.remove_header(name)
        return out


def _int_header(resp: Any, name: str) -> int | None:
    value = resp.headers.get(name)
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _safe_url(url: str) -> str:
    return url.split("?", 1)[0]  # upload URLs carry state tokens in the query


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class Registry:
    """One registry host. Credentials are used but never logged or put in messages."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        ca_cert: Path | None = None,
        credentials: tuple[str, str] | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        insecure_hosts: list[str] | None = None,
        timeout: float = TIMEOUT,
    ):
        self.host = host
        self.timeout = timeout  # per connect and per read: a stalled body fails after this
        self.insecure = insecure
        self.chunk_size = chunk_size
        self.insecure_hosts = sorted({*(insecure_hosts or []), *([host] if insecure else [])})
        self._creds = credentials if credentials is not None else credentials_for(host)
        self._tokens: dict[str, str] = {}
        ctx = ssl.create_default_context()  # the system's CAs...
        if ca_cert:
            ctx.load_verify_locations(cafile=str(ca_cert))  # ...and a private one beside them
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self._ctx = ctx
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ctx), _RedirectHandler(self.insecure_hosts)
        )
        self.scheme = "https"

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    # -- HTTP with auth and retries -------------------------------------------------------------

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], BinaryIO] | None = None,
        length: int | None = None,
        ok: tuple[int, ...] = (200,),
        resend: bool = True,
    ) -> Any:
        """Send a request, answering auth challenges and retrying 5xx and dropped connections.
        ``body`` is bytes or a factory of fresh streams (so a retry can resend it);
        ``resend=False`` for a request that must not be sent twice blindly (an upload chunk:
        the registry may have taken it), which then fails at the first dropped connection."""
        attempt = 0
        refreshed = False
        while True:
            url = path_or_url if "://" in path_or_url else self.url(path_or_url)
            hdrs = dict(headers or {})
            if scope in self._tokens:
                hdrs["Authorization"] = self._tokens[scope]
            data = body() if callable(body) else body
            if length is not None:
                hdrs["Content-Length"] = str(length)
            req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
            try:
                resp = self._opener.open(req, timeout=self.timeout)
                if resp.status not in ok:
                    raise RegistryError(
                        f"{method} {self._safe(url)}: unexpected HTTP {resp.status}"
                    )
                return resp
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and (scope not in self._tokens or not refreshed):
                    # first time: authorize; a 401 with a token: it expired mid-transfer
                    # (tokens last minutes, a large push longer), so get a new one, once
                    refreshed = scope in self._tokens
                    self._tokens[scope] = self._authorize(
                        exc.headers.get("WWW-Authenticate", ""), scope
                    )
                    continue
                if exc.code in ok:
                    return exc
                if exc.code >= 500 and attempt < RETRIES:
                    attempt += 1
                    time.sleep(BACKOFF * 2 ** (attempt - 1))
                    continue
                raise self._http_error(method, url, exc) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
                reason = getattr(exc, "reason", exc)
                if self.scheme == "https" and _looks_like_plain_http(reason):
                    if self.insecure:
                        self.scheme = "http"  # an insecure host that speaks plain HTTP
                        continue
                    raise RegistryError(
                        f"{self.host} does not answer TLS (a plain-HTTP registry?): name it "
                        f"with --insecure-host {self.host} if you trust this network"
                    ) from None
                if isinstance(reason, ssl.SSLCertVerificationError):
                    raise RegistryError(
                        f"TLS verification failed for {self.host}: {reason.verify_message}; "
                        "pass --ca-cert FILE for a private CA, or --insecure-host "
                        f"{self.host} if you trust this network"
                    ) from None
                if attempt < RETRIES and resend:
                    attempt += 1
                    log.info("retrying %s %s after %s", method, self._safe(url), reason)
                    time.sleep(BACKOFF * 2 ** (attempt - 1))
                    continue
                raise RegistryError(f"cannot reach registry {self.host}: {reason}") from None

    @staticmethod
    def _safe(url: str) -> str:
        return url.split("?", 1)[0]  # upload URLs carry state tokens in the query

    def _http_error(self, method: str, url: str, exc: urllib.error.HTTPError) -> RegistryError:
        try:
            detail = json.loads(exc.read() or b"{}").get("errors", [{}])[0]
            msg = f"{detail.get('code', '')} {detail.get('message', '')}".strip()
        except (json.JSONDecodeError, RecursionError, AttributeError, IndexError, OSError):
            msg = exc.reason
        cls = AuthError if exc.code in (401, 403) else RegistryError
        hint = {
            401: "; check your credentials",
            403: "; the account may lack push rights",
            404: "; check the repository and tag",
        }.get(exc.code, "")
        return cls(f"{method} {self._safe(url)}: HTTP {exc.code} {msg}{hint}")

    def _authorize(self, header: str, scope: str) -> str:
        scheme, params = _challenge(header)
        if scheme == "basic":
            if not self._creds:
                raise AuthError(
                    f"registry {self.host} needs credentials: set "
                    "TCM_REGISTRY_USER/TCM_REGISTRY_PASSWORD, REGISTRY_AUTH_FILE, or "
                    "log in with podman/docker"
                )
            return "Basic " + base64.b64encode(":".join(self._creds).encode()).decode()
        if scheme == "bearer" and params.get("realm"):
            realm = params["realm"]
            if _origin(realm)[0] != "https" and _netloc(realm) not in self.insecure_hosts:
                raise AuthError(
                    f"registry {self.host} sends tcm to a token server over plain HTTP "
                    f"({_safe_url(realm)}): refused, credentials would travel in clear; name "
                    f"--insecure-host {_netloc(realm)} if you trust that network"
                )
            # The realm may be another host (auth.docker.io for Docker Hub): credentials go
            # to it as docker sends them, because the registry itself named it, and only over
            # https (or to a host the user called insecure).
            query = [("service", params.get("service", ""))]
            query += [("scope", s) for s in scope.split()]  # one scope parameter per repo
            token_url = params["realm"] + "?" + urllib.parse.urlencode(query)
            req = urllib.request.Request(token_url)
            if self._creds:
                req.add_header(
                    "Authorization",
                    "Basic " + base64.b64encode(":".join(self._creds).encode()).decode(),
                )
            try:
                with self._opener.open(req, timeout=60) as resp:
                    data = json.load(resp)
            except urllib.error.HTTPError as exc:
                raise AuthError(
                    f"token server of {self.host} refused ({exc.code}); check your credentials"
                ) from None
            except (urllib.error.URLError, json.JSONDecodeError, RecursionError) as exc:
                raise AuthError(f"token server of {self.host} failed: {exc}") from None
            token = data.get("token") or data.get("access_token")
            if not token:
                raise AuthError(f"token server of {self.host} returned no token")
            return f"Bearer {token}"
        raise AuthError(f"registry {self.host} asks for unsupported auth {header!r}")

    # -- distribution API -----------------------------------------------------------------------

    def has_blob(self, repo: str, digest: str) -> bool:
        resp = self.request(
            "HEAD", f"/v2/{repo}/blobs/{digest}", scope=_scope(repo, "pull"), ok=(200, 404)
        )
        return bool(resp.status == 200)

    def mount_blob(self, repo: str, digest: str, source_repo: str) -> bool:
        q = urllib.parse.urlencode({"mount": digest, "from": source_repo})
        resp = self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/?{q}",
            scope=_scope(repo, "pull,push") + " " + _scope(source_repo, "pull"),
            ok=(201, 202),
            length=0,
            body=b"",
        )
        return bool(resp.status == 201)

    def upload_blob(
        self,
        repo: str,
        desc: dict[str, Any],
        opener: Callable[[], BinaryIO],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Monolithic PUT for small blobs; PATCH chunks (each a fresh Location) for large."""
        scope = _scope(repo, "pull,push")
        digest, size = desc["digest"], desc["size"]
        resp = self.request(
            "POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,), length=0, body=b""
        )
        location = self._location(resp)
        if size <= self.chunk_size:
            self.request(
                "PUT",
                _with_digest(location, digest),
                scope=scope,
                ok=(201,),
                body=opener,
                length=size,
                headers={"Content-Type": "application/octet-stream"},
            )
            if progress:
                progress(size)
            return
        for attempt in range(RETRIES + 1):
            try:
                location = self._upload_chunks(location, scope, opener, size, progress)
                break
            except UploadSessionLost as lost:
                if attempt == RETRIES:
                    raise RegistryError(
                        f"cannot upload {digest[:19]} to {self.host}/{repo}: {lost}, "
                        f"{RETRIES + 1} times; the registry is up but its upload sessions "
                        "keep failing: run this again"
                    ) from None
                log.info("upload of %s: %s; starting a new upload", digest[:19], lost)
                resp = self.request(
                    "POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,), length=0,
                    body=b"",
                )  # fmt: skip
                location = self._location(resp)
        self.request(
            "PUT", _with_digest(location, digest), scope=scope, ok=(201,), length=0, body=b""
        )

    def _upload_chunks(
        self,
        location: str,
        scope: str,
        opener: Callable[[], BinaryIO],
        size: int,
        progress: Callable[[int], None] | None,
    ) -> str:
        """PATCH the blob chunk by chunk into one upload session; returns its last location.
        A chunk whose connection drops is not sent again blindly: the registry is asked how
        much it holds (``GET`` the upload URL: its ``Range``), and the upload goes on from
        there; where it cannot (the session is gone, or holds less than this chunk's start),
        ``UploadSessionLost`` says to start a new session."""
        stream = opener()
        try:
            offset = 0
            chunk = b""
            stuck = 0  # chunks in a row that the registry did not take
            while offset < size:
                if not chunk:
                    chunk = stream.read(self.chunk_size)
                    if not chunk:
                        break
                end = offset + len(chunk) - 1
                try:
                    resp = self.request(
                        "PATCH", location, scope=scope, ok=(202,), body=chunk,
                        length=len(chunk), resend=False,
                        headers={"Content-Type": "application/octet-stream",
                                 "Content-Range": f"{offset}-{end}"},
                    )  # fmt: skip
                    location = self._location(resp)
                    taken = end + 1
                except RegistryError as exc:
                    location, taken = self._upload_status(location, scope, str(exc))
                    if not offset <= taken <= end + 1:
                        raise UploadSessionLost(
                            f"the registry holds {taken} bytes of an upload at byte {offset}"
                        ) from None
                    stuck = stuck + 1 if taken == offset else 0
                    if stuck > RETRIES:
                        raise UploadSessionLost(str(exc)) from None
                    log.info("chunk at %d: the registry holds %d bytes; going on", offset, taken)
                    time.sleep(BACKOFF * 2 ** max(stuck - 1, 0))
                if progress and taken > offset:
                    progress(taken - offset)
                chunk = chunk[taken - offset :]
                offset = taken
        finally:
            stream.close()
        return location

    def _upload_status(self, location: str, scope: str, cause: str) -> tuple[str, int]:
        """(the upload's location now, how many bytes the registry holds of it)."""
        try:
            resp = self.request("GET", location, scope=scope, ok=(204,))
        except RegistryError:
            raise UploadSessionLost(cause) from None
        held = re.fullmatch(r"0-(\d+)", resp.headers.get("Range", "") or "")
        # "0-N": bytes 0..N are held; "0-0" is also what distribution answers for an empty
        # upload (its end is max(size - 1, 0)), and no chunk is one byte: read as empty
        last = int(held.group(1)) if held else 0
        return self._location(resp), last + 1 if last > 0 else 0

    def _location(self, resp: Any) -> str:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"registry {self.host} gave no upload location")
        return urllib.parse.urljoin(self.url("/"), str(loc))

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            scope=_scope(repo, "pull,push"),
            ok=(201,),
            body=data,
            length=len(data),
            headers={"Content-Type": media_type},
        )
        return str(resp.headers.get("Docker-Content-Digest", ""))

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        found = self.find_manifest(repo, ref, missing_ok=False)
        assert found is not None
        return found

    def find_manifest(
        self, repo: str, ref: str, *, missing_ok: bool = True
    ) -> tuple[bytes, str] | None:
        """A manifest and its media type; None where the registry has none (``missing_ok``)."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{ref}",
            scope=_scope(repo, "pull"),
            headers={"Accept": ACCEPT},
            ok=(200, 404) if missing_ok else (200,),
        )
        if resp.status == 404:
            resp.close()
            return None
        check_doc_size(_int_header(resp, "Content-Length"), f"manifest {repo}:{ref}")
        with resp:
            data = read_doc(resp, f"manifest {repo}:{ref}")
        return data, resp.headers.get("Content-Type", MT_MANIFEST).split(";")[0]

    def open_blob(self, repo: str, digest: str, size: int | None) -> BinaryIO:
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=_scope(repo, "pull"))
        what = f"blob {digest[:19]} from {self.host}/{repo}"
        body = _ResumingBody(self, f"/v2/{repo}/blobs/{digest}", _scope(repo, "pull"), resp, what)
        return VerifyingReader(body, digest, size, what)  # type: ignore[arg-type, return-value]


class _ResumingBody(io.RawIOBase):
    """A blob's body that survives a dropped or stalled connection: it asks again from the
    last byte it has (``Range``), or, where the registry answers the whole blob again, reads
    past what it has. The digest is still checked over every byte by the reader above. After
    RETRIES tries without progress it fails naming the cause ("connection reset", "timed out
    after N s"), never "corrupt", which is kept for a digest that does not match."""

    def __init__(self, registry: Registry, path: str, scope: str, resp: Any, what: str):
        self.registry, self.path, self.scope, self.resp, self.what = (
            registry, path, scope, resp, what,
        )  # fmt: skip
        self.offset = 0
        self.total = _int_header(resp, "Content-Length")
        self.tries = 0
        self.resumed = 0  # requests made to continue (for reports and tests)

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while True:
            try:
                # read1: what has arrived, so that a reset loses nothing already received
                data = self.resp.read1(len(buf))
                n = len(data)
                buf[:n] = data
                if n == 0 and self.total is not None and self.offset < self.total:
                    raise http.client.IncompleteRead(b"", self.total - self.offset)
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, cut short
                self._resume(exc)
                continue
            if n:
                self.offset += n
                self.tries = 0
            return int(n)

    def _resume(self, exc: BaseException) -> None:
        cause = _transfer_failure(exc, self.registry.timeout)
        with contextlib.suppress(Exception):
            self.resp.close()
        self.tries += 1
        if self.tries > RETRIES:
            raise RegistryError(
                f"{self.what}: {cause} at byte {self.offset} of "
                f"{self.total if self.total is not None else '?'}, {self.tries} times in a row; "
                "nothing was kept: check the network or the registry and run this again"
            ) from None
        log.info("%s: %s at byte %d; asking for the rest", self.what, cause, self.offset)
        time.sleep(BACKOFF * 2 ** (self.tries - 1))
        resp = self.registry.request(
            "GET", self.path, scope=self.scope, headers={"Range": f"bytes={self.offset}-"},
            ok=(200, 206),
        )  # fmt: skip
        self.resumed += 1
        start = f"bytes {self.offset}-"
        if resp.status == 206 and resp.headers.get("Content-Range", "").startswith(start):
            self.resp = resp
            return
        # the whole blob again (Range ignored): skip what was read already
        left = self.offset
        while left:
            skipped = resp.read(min(left, 1 << 20))
            if not skipped:
                raise http.client.IncompleteRead(b"", left)
            left -= len(skipped)
        self.resp = resp

    def close(self) -> None:
        try:
            self.resp.close()
        finally:
            super().close()


def _transfer_failure(exc: BaseException, timeout: float) -> str:
    """What went wrong with a transfer, as a user reads it."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g} s without data"
    if isinstance(exc, (ConnectionResetError, http.client.IncompleteRead)):
        return "connection reset"
    if isinstance(exc, ConnectionError):
        return f"connection lost ({exc.strerror or exc})"
    return f"transfer failed ({exc})"


def _scope(repo: str, actions: str) -> str:
    return f"repository:{repo}:{actions}"


def _with_digest(location: str, digest: str) -> str:
    sep = "&" if urllib.parse.urlparse(location).query else "?"
    return f"{location}{sep}digest={urllib.parse.quote(digest)}"


def _looks_like_plain_http(reason: object) -> bool:
    text = str(reason).lower()
    return (
        "wrong version number" in text
        or "record layer failure" in text
        or ("eof occurred in violation" in text)
    )


class RegistryImage:
    """``docker://HOST/REPO:TAG`` as an image source and destination."""

    def __init__(self, registry: Registry, repo: str, tag: str, digest: str | None = None):
        self.registry, self.repo, self.tag, self.digest = registry, repo, tag, digest
        self.mount_from: str | None = None  # a repo on the same host that holds the blobs

    def describe(self) -> str:
        ref = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"docker://{self.registry.host}/{self.repo}{ref}"

    def manifest(self) -> tuple[bytes, str]:
        return resolve_index(self, *self.top_manifest())

    def top_manifest(self) -> tuple[bytes, str]:
        """The manifest the reference names (an index stays an index): what is signed."""
        data, mt = self.registry.get_manifest(self.repo, self.digest or self.tag)
        if self.digest:
            VerifyingReader(io.BytesIO(data), self.digest, len(data), "manifest").read()
        return data, mt

    def read_manifest_blob(self, desc: dict[str, Any]) -> bytes:
        data, _ = self.registry.get_manifest(self.repo, desc["digest"])
        VerifyingReader(io.BytesIO(data), desc["digest"], desc.get("size"), "manifest").read()
        return data

    def open_blob(self, digest: str, size: int | None = None) -> BinaryIO:
        return self.registry.open_blob(self.repo, digest, size)

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        return self.registry.has_blob(self.repo, digest)

    def put_blob(
        self,
        desc: dict[str, Any],
        opener: Callable[[], BinaryIO],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        if self.mount_from and self.mount_from != self.repo:
            try:
                if self.registry.mount_blob(self.repo, desc["digest"], self.mount_from):
                    return
            except ImageError:
                pass  # fall back to uploading
        self.registry.upload_blob(self.repo, desc, opener, progress)

    def put_manifest(self, data: bytes, media_type: str) -> str:
        return self.registry.put_manifest(self.repo, self.tag, data, media_type)

    def commit(self) -> None:
        pass


__all__ = ["CHUNK", "Registry", "RegistryImage", "credentials_for"]
