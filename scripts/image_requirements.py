"""Print the exact requirements of a container image, from pyproject.toml and requirements.txt.

    python scripts/image_requirements.py cpu|gpu [--requirements requirements.txt]
                                                  [--pyproject pyproject.toml]

requirements.txt pins the exact versions CI and the README install, but it mixes what runs with
what tests (pytest, ruff, the GCS emulator, ...). An image needs only what runs: the
project's `dependencies` plus its `tf` extra, from pyproject.toml. This prints those names
with the version requirements.txt pins for each, one per line:

- cpu: the dependencies + tensorflow-cpu + tensorboard (preprocess, trainer on CPU, evaluator,
  TensorBoard, the launcher);
- gpu: the same, with `tensorflow[and-cuda]` at tensorflow-cpu's pinned version (the CUDA
  build of the same release: CUDA and cuDNN come as PyPI wheels, so any glibc base works).

The Dockerfiles install the result with `pip install -c requirements.txt -r -`, so every
transitive package that requirements.txt also pins (keras, protobuf, numpy, ...) gets that
exact version too, and nothing only tests use is installed. A direct dependency with no exact
pin in requirements.txt is an error: an image never floats where CI does not.

Standard library only (it runs in the image build before anything is installed; Python 3.11+
for tomllib, or 3.10 with tomli).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """Exact pins (`name==version`) of a requirements file, by canonical name."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        if not match:
            raise SystemExit(f"{path}:{number}: {raw!r} is not an exact pin (name==version).")
        pins[canonical(match.group(1))] = match.group(2)
    return pins


def direct_names(pyproject: Path, extras: list[str]) -> list[str]:
    """Canonical names of the project's dependencies plus the given extras, in order."""
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = list(project.get("dependencies", []))
    for extra in extras:
        specs += project.get("optional-dependencies", {})[extra]
    names = []
    for spec in specs:
        match = _NAME.match(spec)
        if not match:
            raise SystemExit(f"{pyproject}: cannot read the requirement {spec!r}.")
        name = canonical(match.group(1))
        if name not in names:
            names.append(name)
    return names


def image_requirements(flavour: str, requirements: Path, pyproject: Path) -> list[str]:
    """The lines `name==version` (gpu: `tensorflow[and-cuda]==version`) for an image."""
    pins = read_pins(requirements)
    lines = []
    for name in direct_names(pyproject, ["tf"]):
        if name not in pins:
            raise SystemExit(
                f"{requirements} has no exact pin for {name}, which pyproject.toml needs at run "
                "time: add one (name==version)."
            )
        if flavour == "gpu" and name == "tensorflow-cpu":
            lines.append(f"tensorflow[and-cuda]=={pins[name]}")
        else:
            lines.append(f"{name}=={pins[name]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("flavour", choices=["cpu", "gpu"])
    parser.add_argument("--requirements", type=Path, default=Path("requirements.txt"))
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    for line in image_requirements(args.flavour, args.requirements, args.pyproject):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
