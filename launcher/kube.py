"""A small door to the Kubernetes API: connect, read, create, list, delete, as plain JSON.

The official `kubernetes` client is imported here only, on first use, so that `--help` and the
local backend never pay for it. Its configuration loading (kubeconfig, in-cluster service
account, auth plugins) and transport are used; its typed models are not: objects travel as
plain dicts both ways, because those models are stricter than the API (`nvidia.com/gpu: 1`
fails their validation) and may lag behind the cluster. Every call has a short timeout and no
retries: an unreachable cluster is one sentence within seconds, not a hang.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from common.cli import UserError

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 20.0
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

Obj = dict[str, Any]

# Credentials a kubeconfig or an error may carry in a URL: the user:password@ of the server,
# and token-like query parameters. Never echoed: errors end up in terminals, logs and issues.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:access_token|token|password|passwd|secret|key|client_secret|sig|signature)=)"
    r"[^&#\s'\"]+"
)
REDACTED = "***"

# (apiVersion, kind) -> resource plural: every kind the launcher reads or writes.
PLURALS = {
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Service"): "services",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Pod"): "pods",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "Job"): "jobs",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitors",
}
CUSTOM = {("monitoring.coreos.com/v1", "PodMonitor")}  # kinds a cluster may not have


class ClusterError(UserError):
    """The cluster refused or could not be reached: one sentence."""


class Cluster:
    """One namespace of one cluster, from a kubeconfig (or the pod's own service account)."""

    def __init__(
        self,
        *,
        namespace: str | None = None,
        context: str | None = None,
        config_file: str | None = None,
    ) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        default_namespace = "default"
        try:
            if config_file or _kubeconfig_exists() or not _in_cluster():
                # Read KUBECONFIG now: the client's default was fixed when it was imported.
                config_file = config_file or os.environ.get("KUBECONFIG") or "~/.kube/config"
                config.load_kube_config(
                    config_file=config_file, context=context, client_configuration=configuration
                )
                default_namespace = _context_namespace(config_file, context) or default_namespace
            else:
                config.load_incluster_config(client_configuration=configuration)
                with open(IN_CLUSTER_NAMESPACE, encoding="utf-8") as f:
                    default_namespace = f.read().strip() or default_namespace
        except (config.ConfigException, OSError, ValueError, TypeError) as exc:
            raise ClusterError(
                f"no usable Kubernetes configuration ({_first_line(exc)}); set KUBECONFIG or "
                "pass --context, or use --backend local."
            ) from None
        configuration.retries = False  # fail fast; the caller decides what to retry
        self._client = client
        self.api = client.ApiClient(configuration)
        self.server = redact(configuration.host)  # for sentences only
        self.namespace = namespace or default_namespace

    # ------------------------------------------------------------ calls

    def _path(self, api_version: str, kind: str, name: str | None = None) -> str:
        root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        path = f"{root}/namespaces/{self.namespace}/{PLURALS[(api_version, kind)]}"
        return f"{path}/{name}" if name else path

    def _call(
        self,
        what: str,
        method: str,
        path: str,
        *,
        body: Obj | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> Obj | None:
        """One request as plain JSON (no client models, which are stricter than the API and
        can lag behind it); 404 -> None, any other failure -> one sentence."""
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        try:
            request = self.api.param_serialize(
                method, path, query_params=query or None, header_params=headers, body=body,
                auth_settings=["BearerToken"],
            )  # fmt: skip
            response = self.api.call_api(
                *request, _request_timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
            )
            data = response.read()
        except Exception as exc:  # urllib3 and socket errors come in many types
            raise ClusterError(
                f"cannot reach the Kubernetes API at {self.server} to {what} ({_first_line(exc)})."
            ) from None
        if response.status == 404:
            return None
        if not 200 <= response.status < 300:
            raise ClusterError(f"cannot {what}: {_api_reason(response.status, data)}.")
        return json.loads(data) if data else {}

    def check_reachable(self) -> None:
        """One cheap call that needs what a launch needs: the API, the namespace, Job access.

        Fails with one sentence within about CONNECT_TIMEOUT_S when the API cannot be reached.
        """
        found = self._call(
            f"list Jobs in namespace {self.namespace}",
            "GET",
            self._path("batch/v1", "Job"),
            query=[("limit", "1")],
        )
        if found is None:
            raise ClusterError(f"the Kubernetes API at {self.server} serves no Jobs (batch/v1).")

    def get(self, api_version: str, kind: str, name: str) -> Obj | None:
        return self._call(f"read {kind} {name}", "GET", self._path(api_version, kind, name))

    def create(self, obj: Obj) -> Obj:
        api_version, kind, name = obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
        body = {**obj, "metadata": {**obj["metadata"], "namespace": self.namespace}}
        created = self._call(
            f"create {kind} {name}", "POST", self._path(api_version, kind), body=body
        )
        if created is None:
            raise ClusterError(f"cannot create {kind} {name}: the cluster does not serve {kind}.")
        return created

    def list(self, api_version: str, kind: str, labels: dict[str, str]) -> list[Obj]:
        """Objects of a kind carrying every label given (also filtered here: not every API
        server honours label selectors, and an emulator may not)."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        found = self._call(
            f"list {kind}s", "GET", self._path(api_version, kind),
            query=[("labelSelector", selector)],
        )  # fmt: skip
        items = (found or {}).get("items") or []
        return [o for o in items if _has_labels(o, labels)]

    def delete(self, api_version: str, kind: str, name: str) -> bool:
        """Delete one object (a Job's pods too, in the background); False if it was not there."""
        done = self._call(
            f"delete {kind} {name}", "DELETE", self._path(api_version, kind, name),
            body={"propagationPolicy": "Background"},
        )  # fmt: skip
        return done is not None

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the cluster knows a custom kind (a PodMonitor needs the Prometheus operator)."""
        if (api_version, kind) not in CUSTOM:
            return True
        found = self._call(
            f"look for {kind}s", "GET", self._path(api_version, kind), query=[("limit", "1")]
        )
        return found is not None


def _has_labels(obj: Obj, labels: dict[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def _kubeconfig_exists() -> bool:
    paths = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)
    return any(os.path.exists(os.path.expanduser(p)) for p in paths if p)


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(IN_CLUSTER_NAMESPACE)


def _context_namespace(config_file: str | None, context: str | None) -> str | None:
    from kubernetes import config

    contexts, current = config.list_kube_config_contexts(config_file=config_file)
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
    return ((chosen or {}).get("context") or {}).get("namespace")


def _api_reason(status: int, data: bytes | None) -> str:
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {status}" + (f": {_first_line(message)}" if message else "")


def redact(text: str) -> str:
    """`text` with the credentials a URL in it may carry replaced by ***:
    https://alice:s3cret@k8s:6443/api?token=abc -> https://***@k8s:6443/api?token=***."""
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    return _SECRET_QUERY.sub(rf"\1{REDACTED}", text)


def _first_line(exc: object) -> str:
    """The first line of an error, credentials redacted: every sentence of this module that
    quotes an exception or the server goes through here or through redact."""
    lines = str(exc).strip().splitlines()
    return redact(lines[0])[:300] if lines else type(exc).__name__
