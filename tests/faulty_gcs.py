"""A fault-injecting HTTP proxy in front of the GCS emulator, for google-cloud-storage.

Point `STORAGE_EMULATOR_HOST` at `FaultyGcs.url` and every request of common.storage goes
through it to the real fake-gcs-server, unless a fault is armed:

* `lose_replies(match, times)`: the request reaches the emulator and takes effect, but its
  answer never comes back (the connection is closed instead): a reply lost on the network.
* `outage(mode, seconds)`: for that long (None: until `heal()`), every request fails before it
  reaches the emulator: "reset" closes the connection, "503" answers Service Unavailable,
  "silent" reads the request and never answers (a bucket gone behind a black hole).

Each answer carries `Connection: close`, so every request is a connection of its own and a
fault never leaks into the next one. The proxy runs in a thread of the test process; the code
under test may run there or in a subprocess.
"""

from __future__ import annotations

import http.client
import socket
import socketserver
import threading
import time
from collections.abc import Callable

from tests.gcs_emulator import _HOP_BY_HOP, _read_body, _read_head

Match = Callable[[str, str], bool]  # (method, path with query) -> whether the fault applies


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class FaultyGcs:
    def __init__(self, upstream_url: str) -> None:
        host, _, port = upstream_url.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.requests: list[tuple[str, str]] = []  # every request seen, in order
        self.lost: list[tuple[str, str]] = []  # requests whose reply was dropped
        self._lose: tuple[Match, int] | None = None
        self._outage: tuple[str, float] | None = None  # (mode, until: monotonic)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    # ------------------------------------------------------------ arming faults

    def lose_replies(self, match: Match, times: int = 1) -> None:
        with self._lock:
            self._lose = (match, times)

    def outage(self, mode: str = "reset", seconds: float | None = None) -> None:
        assert mode in ("reset", "503", "silent")
        until = float("inf") if seconds is None else time.monotonic() + seconds
        with self._lock:
            self._outage = (mode, until)

    def heal(self) -> None:
        with self._lock:
            self._outage, self._lose = None, None

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------ serving

    def _fault(self, method: str, target: str) -> str | None:
        """The fault for this request: "lose", an outage mode, or None (forward it)."""
        with self._lock:
            self.requests.append((method, target))
            if self._outage is not None:
                mode, until = self._outage
                if time.monotonic() < until:
                    return mode
                self._outage = None
            if self._lose is not None and self._lose[0](method, target):
                match, left = self._lose
                self._lose = (match, left - 1) if left > 1 else None
                self.lost.append((method, target))
                return "lose"
        return None

    def _handler_class(self) -> type[socketserver.BaseRequestHandler]:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                try:
                    rfile = sock.makefile("rb")
                    head = _read_head(rfile)
                    if head is None:
                        return
                    method, target, _version, headers = head
                    body = _read_body(rfile, {k.lower(): v for k, v in headers})
                    fault = proxy._fault(method, target)
                    if fault == "silent":
                        proxy._closing.wait()  # never answers; the client must give up
                        return
                    if fault in (None, "lose"):
                        answer = proxy._forward(method, target, headers, body)
                        if fault is None:
                            sock.sendall(answer)
                        return  # "lose": it took effect, the answer is dropped
                    if fault == "503":
                        sock.sendall(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: 11\r\nConnection: close\r\n\r\nunavailable"
                        )
                except (OSError, ValueError):
                    return
                finally:
                    sock.close()  # "reset" and "lose" end here without an answer

        return Handler

    def _forward(self, method: str, target: str, headers: list, body: bytes) -> bytes:
        """Relay one request to the emulator; the whole answer, ready to send back."""
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            out = [f"HTTP/1.1 {resp.status} {resp.reason}".encode("latin-1")]
            for name, value in resp.getheaders():
                if name.lower() not in ("connection", "keep-alive", "transfer-encoding",
                                        "content-length"):  # fmt: skip
                    out.append(f"{name}: {value}".encode("latin-1"))
            out += [f"Content-Length: {len(data)}".encode(), b"Connection: close"]
            return b"\r\n".join(out) + b"\r\n\r\n" + data
        finally:
            conn.close()

    def __enter__(self) -> FaultyGcs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
