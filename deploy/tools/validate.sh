#!/usr/bin/env bash
# Validates every deployment manifest offline, as CI does (.ci/run):
#   1. the generated configs are current (deploy/tools/gen-configmap.py --check);
#   2. every Kubernetes object against the official schemas, the PodMonitor and the Cloud Run
#      Service against typed models, each config against its manifest
#      (deploy/tools/validate_manifests.py), and the kustomization as rendered by
#      `kubectl kustomize` when kubectl is installed;
#   3. `wsnorm check` and the rule fixtures on each deployed config, with a built wsnorm
#      (WSNORM_BIN, default target/release/wsnorm; required when CI is set).
# Every step runs; exit 1 if any failed. Needs python3 (python3-venv is installed with apt-get
# when missing). The Python tools live in a venv pinned by deploy/tools/requirements.txt,
# target/deploy-venv, made again when that file changes; the output is kept in
# target/deploy-validate/.
# Usage: deploy/tools/validate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

VENV=target/deploy-venv
REQUIREMENTS=deploy/tools/requirements.txt
OUT=target/deploy-validate
WSNORM=${WSNORM_BIN:-target/release/wsnorm}
rm -rf "$OUT"
mkdir -p "$OUT"

passed=0
failed=0
step() { # step WHAT COMMAND...: runs one step, output to the terminal and $OUT/steps.log
  local what=$1 rc=0
  shift
  log "== $what"
  "$@" 2>&1 | tee -a "$OUT/steps.log" || rc=$?
  if [ "$rc" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); log "FAILED: $what"; fi
}

# Debian's python3 has no venv module (ensurepip) without python3-venv.
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt"; then
  log "== setting up $VENV from $REQUIREMENTS"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # --no-deps: the file pins every package, so nothing unpinned comes in; pip check proves the
  # pinned set is complete.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$REQUIREMENTS"
  "$VENV/bin/pip" check --disable-pip-version-check >/dev/null
  cp "$REQUIREMENTS" "$VENV/requirements.txt"
fi

step "generated configs are current" python3 deploy/tools/gen-configmap.py --check

rendered=()
if command -v kubectl >/dev/null; then
  step "kubectl kustomize deploy/kubernetes" \
    sh -c "kubectl kustomize deploy/kubernetes > $OUT/rendered.yaml"
  [ -s "$OUT/rendered.yaml" ] && rendered=("$OUT/rendered.yaml")
else
  log "kubectl not found: the kustomization is not rendered (each file is still validated)"
fi

step "manifests against schemas and models" \
  "$VENV/bin/python" deploy/tools/validate_manifests.py "${rendered[@]}"

# The deployed configs through wsnorm itself: valid, and the default rules' fixtures still pass.
check_config() { # check_config CONFIG
  env -u WSNORM_CONFIG -u WSNORM_LISTEN -u WSNORM_ADMIN -u WSNORM_BACKEND \
    "$WSNORM" check --config "$1" >/dev/null \
    && env -u WSNORM_CONFIG -u WSNORM_LISTEN -u WSNORM_ADMIN -u WSNORM_BACKEND \
      "$WSNORM" test-rules --config "$1" config/tests/*.toml
}
if [ -x "$WSNORM" ]; then
  "$VENV/bin/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["data"]["wsnorm.toml"], end="")' \
    deploy/kubernetes/configmap.yaml >"$OUT/configmap-wsnorm.toml"
  step "wsnorm check: the ConfigMap's wsnorm.toml" check_config "$OUT/configmap-wsnorm.toml"
  step "wsnorm check: deploy/cloudrun/wsnorm.toml" check_config deploy/cloudrun/wsnorm.toml
elif [ -n "${CI:-}" ]; then
  step "wsnorm binary at $WSNORM (build it first: cargo build --release --bin wsnorm)" false
else
  log "no wsnorm at $WSNORM: the configs are not run through \`wsnorm check\`"
fi

echo "validate: $passed passed, $failed failed"
[ "$failed" = 0 ]
