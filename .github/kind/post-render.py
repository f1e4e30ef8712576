#!/usr/bin/env python3
"""helm --post-renderer for the kind smoke test: route TensorFlow's gs:// to the emulator.

Reads the chart's rendered manifests on stdin and writes them to stdout with, in every pod
(trainer Jobs, evaluator, TensorBoard, the helm test Pod), the variables that send TensorFlow's
GCS filesystem through the in-cluster TLS proxy (gcs_proxy.py) and the proxy's CA mounted from
the ConfigMap gcs-proxy-ca. google-cloud-storage keeps going straight to STORAGE_EMULATOR_HOST
(NO_PROXY). The chart itself stays as users get it: this is test wiring only.
"""

import sys

import yaml

PROXY = "http://gcs-proxy:3128"
ENV = {
    "https_proxy": PROXY,
    "http_proxy": PROXY,
    "HTTPS_PROXY": PROXY,
    "HTTP_PROXY": PROXY,
    "no_proxy": "fake-gcs,localhost,127.0.0.1",
    "NO_PROXY": "fake-gcs,localhost,127.0.0.1",
    "CURL_CA_BUNDLE": "/etc/gcs-proxy-ca/ca.crt",
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "x",
    "NO_GCE_CHECK": "true",
    "GCS_STAT_CACHE_MAX_AGE": "0",
}


def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind == "Pod":
        return doc["spec"]
    if kind in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
        return doc["spec"]["template"]["spec"]
    return None


def patch(spec: dict) -> None:
    volume = {"name": "gcs-proxy-ca", "configMap": {"name": "gcs-proxy-ca"}}
    spec.setdefault("volumes", []).append(volume)
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        env = container.setdefault("env", [])
        env.extend({"name": k, "value": v} for k, v in ENV.items())
        container.setdefault("volumeMounts", []).append(
            {"name": "gcs-proxy-ca", "mountPath": "/etc/gcs-proxy-ca", "readOnly": True}
        )


def main() -> None:
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            patch(spec)
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
