"""Idempotent apply: create what is missing, leave what is identical, refuse what differs.

Each object the launcher creates carries a hash of its rendered spec (annotation
`inception-finetune/spec-hash`). Launching the same sweep again finds every object with the
same hash and creates nothing. An object of the same name with another hash (other flags, other
images, another sweep under the same name) or with no hash (made by someone else, helm
included) is a conflict; every object is checked before the first one is created, so a
conflict leaves the cluster as it was. The live spec is not compared: controllers change it
(Kueue unsuspends Jobs, Kubernetes adds defaults), the hash does not.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
from typing import Any

from common.cli import UserError
from launcher import names
from launcher.kube import Cluster

log = logging.getLogger("launcher")

Obj = dict[str, Any]


def spec_hash(obj: Obj) -> str:
    """A digest of an object as rendered, namespace and our own annotation left out."""
    bare = copy.deepcopy(obj)
    meta = bare.get("metadata", {})
    meta.pop("namespace", None)
    (meta.get("annotations") or {}).pop(names.SPEC_HASH, None)
    if not meta.get("annotations"):
        meta.pop("annotations", None)
    text = json.dumps(bare, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_hash(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    out["metadata"].setdefault("annotations", {})[names.SPEC_HASH] = spec_hash(obj)
    return out


@dataclasses.dataclass
class Plan:
    create: list[Obj]
    unchanged: list[Obj]


def plan(cluster: Cluster, objs: list[Obj]) -> Plan:
    """What apply() would do; a conflict or a kind the cluster lacks is one sentence."""
    result = Plan([], [])
    for obj in objs:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if not cluster.serves(obj["apiVersion"], kind):
            raise UserError(
                f"the cluster has no {kind} resource ({obj['apiVersion']}); install the "
                "Prometheus operator or set podMonitor.enabled to false."
            )
        live = cluster.get(obj["apiVersion"], kind, name)
        if live is None:
            result.create.append(obj)
            continue
        theirs = ((live.get("metadata") or {}).get("annotations") or {}).get(names.SPEC_HASH)
        if theirs == spec_hash(obj):
            result.unchanged.append(obj)
        elif theirs is None:
            raise UserError(
                f"{kind} {name} already exists in namespace {cluster.namespace} and was not made "
                "by the launcher; delete it or choose another --name."
            )
        else:
            raise UserError(
                f"{kind} {name} already exists in namespace {cluster.namespace} with a different "
                f"spec; `python -m launcher delete --sweep {_sweep_of(obj)}` first, or choose "
                "another --name."
            )
    return result


def _sweep_of(obj: Obj) -> str:
    return obj["metadata"].get("labels", {}).get(names.SWEEP_LABEL, obj["metadata"]["name"])


def apply(cluster: Cluster, to_create: list[Obj]) -> None:
    """Create the planned objects in order, one log line each."""
    for obj in to_create:
        cluster.create(with_hash(obj))
        log.info("created %s %s/%s", obj["kind"], cluster.namespace, obj["metadata"]["name"])
