"""A small, typed-enough door to the Kubernetes API: connect, read, create, list, delete.

The official `kubernetes` client is imported here only, on first use, so that `--help` and the
local backend never pay for it. Objects travel as plain dicts both ways (what the renderer makes
is what is sent; what comes back is the server's JSON), so no field is lost to a client model
that is older than the cluster. Every call has a short timeout and no retries: an unreachable
cluster is one sentence within seconds, not a hang.
"""

from __future__ import annotations

import json
import os
from typing import Any

from common.cli import UserError

CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 20.0
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

Obj = dict[str, Any]

# (apiVersion, kind) -> (typed API class, method suffix); PodMonitor goes through custom objects.
_TYPED = {
    ("v1", "ServiceAccount"): ("CoreV1Api", "service_account"),
    ("v1", "Service"): ("CoreV1Api", "service"),
    ("v1", "ConfigMap"): ("CoreV1Api", "config_map"),
    ("v1", "Pod"): ("CoreV1Api", "pod"),
    ("v1", "Event"): ("CoreV1Api", "event"),
    ("apps/v1", "Deployment"): ("AppsV1Api", "deployment"),
    ("batch/v1", "Job"): ("BatchV1Api", "job"),
}
_CUSTOM = {("monitoring.coreos.com/v1", "PodMonitor"): "podmonitors"}


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
        self.server = configuration.host
        self.namespace = namespace or default_namespace

    # ------------------------------------------------------------ calls

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one API call; 404 -> None, anything else failing -> one sentence."""
        kwargs.setdefault("_request_timeout", (CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        try:
            response = fn(*args, _preload_content=False, **kwargs)
        except self._client.ApiException as exc:
            if exc.status == 404:
                return None
            raise ClusterError(f"cannot {what}: {_api_reason(exc)}.") from None
        except Exception as exc:  # urllib3 and socket errors come in many types
            raise ClusterError(
                f"cannot reach the Kubernetes API at {self.server} to {what} ({_first_line(exc)})."
            ) from None
        data = response.data
        return json.loads(data) if data else {}

    def check_reachable(self) -> str:
        """The server's version, or one sentence (within about CONNECT_TIMEOUT_S) why not."""
        api = self._client.VersionApi(self.api)
        info = self._call("ask its version", api.get_code)
        return str((info or {}).get("gitVersion", "?"))

    def _typed(self, obj_or_kind: tuple[str, str]) -> tuple[Any, str]:
        api_name, suffix = _TYPED[obj_or_kind]
        return getattr(self._client, api_name)(self.api), suffix

    def get(self, api_version: str, kind: str, name: str) -> Obj | None:
        if (api_version, kind) in _CUSTOM:
            group, version = api_version.split("/")
            api = self._client.CustomObjectsApi(self.api)
            return self._call(
                f"read {kind} {name}",
                api.get_namespaced_custom_object,
                group, version, self.namespace, _CUSTOM[(api_version, kind)], name,
            )  # fmt: skip
        api, suffix = self._typed((api_version, kind))
        return self._call(
            f"read {kind} {name}", getattr(api, f"read_namespaced_{suffix}"), name, self.namespace
        )

    def create(self, obj: Obj) -> Obj:
        api_version, kind, name = obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
        body = {**obj, "metadata": {**obj["metadata"], "namespace": self.namespace}}
        if (api_version, kind) in _CUSTOM:
            group, version = api_version.split("/")
            api = self._client.CustomObjectsApi(self.api)
            fn = api.create_namespaced_custom_object
            args: tuple[Any, ...] = (group, version, self.namespace, _CUSTOM[(api_version, kind)])
        else:
            api, suffix = self._typed((api_version, kind))
            fn, args = getattr(api, f"create_namespaced_{suffix}"), (self.namespace,)
        created = self._call(f"create {kind} {name}", fn, *args, body)
        if created is None:
            raise ClusterError(f"cannot create {kind} {name}: the cluster does not serve {kind}.")
        return created

    def list(self, api_version: str, kind: str, labels: dict[str, str]) -> list[Obj]:
        """Objects of a kind carrying every label given (also filtered here: not every API
        server honours label selectors, and an emulator may not)."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        if (api_version, kind) in _CUSTOM:
            group, version = api_version.split("/")
            api = self._client.CustomObjectsApi(self.api)
            found = self._call(
                f"list {kind}s",
                api.list_namespaced_custom_object,
                group, version, self.namespace, _CUSTOM[(api_version, kind)],
                label_selector=selector,
            )  # fmt: skip
        else:
            api, suffix = self._typed((api_version, kind))
            found = self._call(
                f"list {kind}s",
                getattr(api, f"list_namespaced_{suffix}"),
                self.namespace,
                label_selector=selector,
            )
        items = (found or {}).get("items", [])
        return [o for o in items if _has_labels(o, labels)]

    def delete(self, api_version: str, kind: str, name: str) -> bool:
        """Delete one object (its pods too, in the background); False if it was not there."""
        body = {"propagationPolicy": "Background"}
        if (api_version, kind) in _CUSTOM:
            group, version = api_version.split("/")
            api = self._client.CustomObjectsApi(self.api)
            done = self._call(
                f"delete {kind} {name}",
                api.delete_namespaced_custom_object,
                group, version, self.namespace, _CUSTOM[(api_version, kind)], name,
                body=body,
            )  # fmt: skip
        else:
            api, suffix = self._typed((api_version, kind))
            done = self._call(
                f"delete {kind} {name}",
                getattr(api, f"delete_namespaced_{suffix}"),
                name,
                self.namespace,
                body=body,
            )
        return done is not None

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the cluster knows a custom kind (a PodMonitor needs the Prometheus operator)."""
        if (api_version, kind) not in _CUSTOM:
            return True
        group, version = api_version.split("/")
        api = self._client.CustomObjectsApi(self.api)
        found = self._call(
            f"look for {kind}s",
            api.list_namespaced_custom_object,
            group, version, self.namespace, _CUSTOM[(api_version, kind)],
            limit=1,
        )  # fmt: skip
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


def _api_reason(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return f"{exc.status} {exc.reason}" + (f": {_first_line(message)}" if message else "")


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
