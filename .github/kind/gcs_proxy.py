"""The GCS emulator's TLS proxy, in the kind smoke test's cluster (see gcs-proxy.yaml).

TensorFlow's own gs:// has Google's endpoints compiled in and ignores STORAGE_EMULATOR_HOST, so
the trainer, evaluator and TensorBoard pods reach the in-cluster fake-gcs-server
(k8s/fake-gcs.yaml) through this proxy: https_proxy/http_proxy point here, CURL_CA_BUNDLE
trusts its throwaway CA, and it forwards the Google hosts' requests as plain HTTP to the
emulator. It is the proxy the test suite runs on 127.0.0.1 (tests/gcs_emulator.py, mounted
beside this file), listening on the pod's address instead of loopback.

    python gcs_proxy.py UPSTREAM_HOST:PORT LISTEN_PORT CERT KEY
"""

import os
import socketserver
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gcs_emulator  # noqa: E402  (tests/gcs_emulator.py, from the same ConfigMap)


class Server(gcs_emulator._ProxyServer):
    def __init__(self, listen: int, upstream: tuple[str, int], tls: ssl.SSLContext) -> None:
        handler = gcs_emulator._ProxyHandler
        socketserver.ThreadingTCPServer.__init__(self, ("0.0.0.0", listen), handler)
        self.upstream, self.tls = upstream, tls


def main() -> None:
    upstream, listen, cert, key = sys.argv[1:5]
    host, _, port = upstream.rpartition(":")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = Server(int(listen), (host, int(port)), tls)
    print(f"gcs proxy: :{listen} -> {upstream}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
