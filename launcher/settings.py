"""Cluster settings in the Helm chart's values format: one truth for the chart and the launcher.

Defaults come from the chart's own values.yaml (charts/inception-finetune/values.yaml next to
this package), then each `-f/--values FILE` in turn, then the convenience flags. Merging is
Helm's: maps merge key by key, anything else (lists included) is replaced, and null removes a
key. The merged values are checked against the chart's values.schema.json, so a key the
chart would refuse is refused here too.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from common.cli import UserError

CHART_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "charts")
CHART_NAME = "inception-finetune"
# For a launcher installed away from its repository (or a test): the chart directory to read.
CHART_ENV = "INCEPTION_FINETUNE_CHART"


def chart_dir() -> str:
    return os.environ.get(CHART_ENV) or os.path.join(CHART_DIR, CHART_NAME)


def load_yaml(path: str, what: str) -> dict[str, Any]:
    """A YAML mapping from a file, or one sentence saying why not."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist.") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}.") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise UserError(f"{what} {path} is not valid YAML{line}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of keys to values.")
    return data


def defaults(required: bool) -> dict[str, Any]:
    """The chart's values.yaml; missing: one sentence if `required`, else no defaults."""
    path = os.path.join(chart_dir(), "values.yaml")
    if not os.path.exists(path):
        if required:
            raise UserError(
                f"the chart's settings {path} are missing; run the launcher from the "
                f"repository, or set {CHART_ENV} to the chart's directory."
            )
        return {}
    return load_yaml(path, "the chart's values file")


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge, other values replace, None deletes the key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load(files: list[str], overrides: dict[str, Any], *, required: bool) -> dict[str, Any]:
    """Defaults, then every values file, then `overrides` (nested dict of convenience flags).

    Each file is checked against the chart's schema on its own, whatever the backend: a key
    the chart refuses (`earlystop:` for `earlyStop:`) must not be silently ignored locally.
    """
    values = defaults(required)
    for path in files:
        data = load_yaml(path, "values file")
        check_file(data, path)
        values = merge(values, data)
    return merge(values, overrides)


def _schema() -> dict[str, Any]:
    import json

    path = os.path.join(chart_dir(), "values.schema.json")
    if not os.path.exists(path):
        raise UserError(f"the chart's {path} is missing; the launcher needs the whole chart.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _first_error(schema: dict[str, Any], values: dict[str, Any]) -> Any:
    import jsonschema  # a dependency; imported here to keep `--help` fast

    return jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(values))


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path)


def check_schema(values: dict[str, Any]) -> None:
    """Refuse what the chart's values.schema.json refuses, in one sentence."""
    error = _first_error(_schema(), values)
    if error is not None:
        raise UserError(f"settings: {_where(error) or 'values'}: {error.message}.")


def check_file(data: dict[str, Any], path: str) -> None:
    """One values file against the chart's schema, as far as a file alone can be checked:
    unknown keys and wrong types. Required keys may come from another file or a flag, null
    deletes a key (Helm's merge), and a local sweep's data and out are local paths, so those
    are left to check_schema on the merged values of a cluster sweep."""
    error = _first_error(_file_schema(_schema()), _without_nulls(data))
    if error is None:
        return
    where = _where(error)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties") or {})
        unknown = sorted(str(k) for k in error.instance if k not in known)
        key = ".".join(filter(None, [where, unknown[0] if unknown else ""]))
        raise UserError(
            f"values file {path}: unknown key {key} (the chart refuses it too; see its "
            f"values.yaml for the keys{', under ' + where if where else ''})."
        )
    raise UserError(f"values file {path}: {where or 'values'}: {error.message}.")


def _file_schema(node: Any) -> Any:
    """The schema without `required` anywhere, and without the gs:// patterns of data and out."""
    if isinstance(node, list):
        return [_file_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _file_schema(v) for k, v in node.items() if k != "required"}
    if "properties" in out:
        for name in ("data", "out"):
            if isinstance(out["properties"].get(name), dict):
                out["properties"][name].pop("pattern", None)
    return out


def _without_nulls(data: Any) -> Any:
    """A values mapping without its null entries (they delete a key when merged)."""
    if isinstance(data, dict):
        return {k: _without_nulls(v) for k, v in data.items() if v is not None}
    return data


def get(values: dict[str, Any], dotted: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """A setting by its dotted key, of the expected type, or one sentence naming the key."""
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    if node is None:
        return default
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserError(f"settings: {dotted} must be of type {names}, not {node!r}.")
    return copy.deepcopy(node)


def set_dotted(values: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a nested key in an overrides dict (`trainer.gpus` -> {"trainer": {"gpus": ...}})."""
    parts = dotted.split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
