"""A real registry (Debian's docker-registry) on 127.0.0.1 per test that needs one: plain,
htpasswd basic auth, or TLS with a CA made for the test; and a small proxy in front of it for
what a local registry cannot do: a bearer-token challenge (standing in for a remote registry's
auth server), a corrupted blob, a connection that dies mid-push."""

from __future__ import annotations

import base64
import http.client
import http.server
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.tools import require_tools

USER, PASSWORD = "tcm-user", "s3cret-Pa55"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningRegistry:
    def __init__(self, proc, host, ca=None):
        self.proc, self.host, self.ca = proc, host, ca

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def make_ca(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for IP:127.0.0.1 (docs/cache-formats.md, "Test registry")."""

    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)

    ossl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tcm test CA",
    )
    ossl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (tmp / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ossl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )
    return tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"


@pytest.fixture
def start_registry(tmp_path):
    require_tools("docker-registry")
    started = []

    def start(kind: str = "plain", remote: str | None = None) -> RunningRegistry:
        """``remote``: a pull-through mirror of the registry at that URL (shared FACTS 35)."""
        port = free_port()
        base = tmp_path / f"registry-{port}"
        base.mkdir()
        extra, ca, scheme = "", None, "http"
        if kind == "basic":
            pw = subprocess.run(
                ["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
            ).stdout
            (base / "htpasswd").write_text(pw)
            extra = f"auth:\n  htpasswd:\n    realm: tcm-test\n    path: {base / 'htpasswd'}\n"
        tls = ""
        if kind == "tls":
            ca, cert, key = make_ca(base)
            tls = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
            scheme = "https"
        (base / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n  delete:\n"
            f"    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}{extra}"
            + (f"proxy:\n  remoteurl: {remote}\n" if remote else "")
        )
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(base / "config.yml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        reg = RunningRegistry(proc, f"127.0.0.1:{port}", ca)
        started.append(reg)
        ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/v2/", timeout=1, context=ctx)
                break
            except urllib.error.HTTPError:
                break  # 401: up, and asking for credentials
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        else:
            raise RuntimeError("docker-registry did not start")
        return reg

    yield start
    for reg in started:
        reg.stop()


class Storage:
    """Object storage standing in for S3/GCS behind a cloud registry: serves the blob paths a
    registry redirects to (fetched from the real registry), and records the headers it got."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.seen: list[dict[str, str]] = []
        storage = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                storage.seen.append(dict(self.headers.items()))
                conn = http.client.HTTPConnection(storage.upstream, timeout=30)
                conn.request("GET", self.path.removeprefix("/storage"))
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Proxy:
    """HTTP proxy to a plain registry, with faults. Modes: "bearer" (token challenge),
    "corrupt" (flips a byte of every blob body), "die_after" (closes the connection on the
    Nth upload request and on every one after), "redirect" (Basic auth on every request, blob
    GETs answered with a 307 to ``storage``), "loop" (blob GETs redirect to themselves),
    "reset_once" / "reset_always" (a blob body over ``cut`` bytes is cut there with a TCP
    reset, the first time / every time), "stall_once" (it stops there for ``stall`` seconds,
    then the connection drops). ``ranges``: the Range header of every blob GET.
    "patch_dropped_once" (the ``die_after``-th chunk PATCH is reset before the registry sees
    it), "patch_reply_lost_once" (the registry takes it, its reply is lost to a reset),
    "patch_dropped_always" (every chunk PATCH is reset).
    ``tls`` (cert, key) serves HTTPS."""

    def __init__(
        self, upstream: str, mode: str, die_after: int = 2, storage: Storage | None = None,
        tls: tuple[Path, Path] | None = None, cut: int = 2000, stall: float = 0.0,
    ):  # fmt: skip
        self.upstream, self.mode, self.die_after = upstream, mode, die_after
        self.cut, self.stall, self.faulted = cut, stall, 0
        self.no_range = False  # True: Range is not passed on (a registry that ignores it)
        self.ranges: list[str | None] = []
        self.blob_paths: list[str] = []  # every blob GET passed on
        self.storage = storage
        self.tokens_issued = 0
        self.uses: dict[str, int] = {}
        self.expire_after = 4
        self.uploads = 0
        self.token_requests: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                if self.path.startswith("/token"):
                    auth = self.headers.get("Authorization", "")
                    proxy.token_requests.append(self.path)
                    good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                    if auth != good:
                        return self._reply(401, b'{"errors":[{"code":"DENIED"}]}')
                    proxy.tokens_issued += 1
                    return self._reply(200, f'{{"token":"tok-{proxy.tokens_issued}"}}'.encode())
                basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if proxy.mode == "redirect" and self.headers.get("Authorization") != basic:
                    return self._reply(
                        401,
                        b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                        {"WWW-Authenticate": 'Basic realm="tcm-test"'},
                    )
                blob_get = self.command == "GET" and "/blobs/sha256:" in self.path
                if proxy.mode == "redirect" and blob_get and proxy.storage is not None:
                    where = f"http://{proxy.storage.host}/storage{self.path}"
                    return self._reply(307, b"", {"Location": where})
                if proxy.mode == "loop" and blob_get:
                    return self._reply(307, b"", {"Location": self.path})
                given = self.headers.get("Authorization", "")
                valid = given.startswith("Bearer tok-") and given[len("Bearer tok-") :].isdigit()
                if valid and proxy.mode == "bearer_expiring":  # each token serves a few requests
                    proxy.uses[given] = proxy.uses.get(given, 0) + 1
                    valid = proxy.uses[given] <= proxy.expire_after
                bearer = proxy.mode in ("bearer", "bearer_expiring")
                if bearer and not valid:
                    realm = f"http://{proxy.host}/token"
                    return self._reply(
                        401,
                        b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                        {"WWW-Authenticate": f'Bearer realm="{realm}",service="tcm-test"'},
                    )
                if proxy.mode == "die_after" and self.command in ("PUT", "PATCH"):
                    proxy.uploads += 1
                    if proxy.uploads >= proxy.die_after:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return None
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                lose = proxy.mode in ("patch_dropped_once", "patch_reply_lost_once")
                if lose and self.command == "PATCH":
                    proxy.uploads += 1
                    if proxy.uploads == proxy.die_after and proxy.mode == "patch_dropped_once":
                        return self._reset()
                if proxy.mode == "patch_dropped_always" and self.command == "PATCH":
                    proxy.uploads += 1
                    return self._reset()
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                dropped = ("host", "authorization", *(("range",) if proxy.no_range else ()))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if lose and self.command == "PATCH" and proxy.uploads == proxy.die_after:
                    return self._reset()  # the registry has the chunk; the client never hears
                if proxy.mode == "corrupt" and "/blobs/sha256:" in self.path and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                if blob_get:
                    proxy.ranges.append(self.headers.get("Range"))
                    proxy.blob_paths.append(self.path)
                faulty = proxy.mode in ("reset_always", "reset_once", "stall_once")
                once = proxy.mode != "reset_always"
                if faulty and blob_get and len(data) > proxy.cut and not (once and proxy.faulted):
                    proxy.faulted += 1
                    return self._cut(resp.status, data, resp.getheaders())
                hdrs = {
                    k: v
                    for k, v in resp.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                }
                if "Location" in hdrs and hdrs["Location"].startswith("http://" + proxy.upstream):
                    hdrs["Location"] = hdrs["Location"].replace(proxy.upstream, proxy.host)
                return self._reply(resp.status, data, hdrs)

            def _cut(self, code, data, headers):
                """The headers promise the whole body; ``cut`` bytes of it come, then (after
                a stall) a TCP reset."""
                self.send_response(code)
                for k, v in headers:
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: proxy.cut])
                self.wfile.flush()
                if proxy.stall:
                    time.sleep(proxy.stall)
                self._reset()

            def _reset(self):
                proxy.faulted += 1 if proxy.mode.startswith("patch") else 0  # (cuts count theirs)
                self.close_connection = True
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()

            def _reply(self, code, body, headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_PATCH = do_HEAD = do_DELETE = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def storage():
    made = []

    def make(upstream: str) -> Storage:
        s = Storage(upstream)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def proxy():
    made = []

    def make(upstream: str, mode: str, **kw) -> Proxy:
        p = Proxy(upstream, mode, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
