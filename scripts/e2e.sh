#!/usr/bin/env bash
# e2e suite against a real Kubernetes API server (`make e2e`).
# With docker and kind installed, a throwaway kind cluster is created (and deleted afterwards unless
# KEEP_CLUSTER=1) and this checkout's image is built and loaded into it; otherwise the cluster in KUBECONFIG
# is used with PGBACKUP_E2E_IMAGE (default: the chart's image). Without either, the suite is skipped and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${KIND_CLUSTER:-pgbackup-e2e}
PYTEST=${PYTEST:-.venv/bin/pytest}
export PATH="$PWD/.tools/bin:$PATH"

if command -v docker >/dev/null && command -v kind >/dev/null && docker info >/dev/null 2>&1; then
  export KUBECONFIG="$PWD/.tools/kind-$CLUSTER.kubeconfig"
  if ! kind get clusters 2>/dev/null | grep -x "$CLUSTER" >/dev/null; then  # no -q: under pipefail, kind must not be cut off
    kind create cluster --name "$CLUSTER" --wait 120s
  fi
  kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then trap 'kind delete cluster --name "$CLUSTER"' EXIT; fi
  if [ -z "${PGBACKUP_E2E_IMAGE:-}" ]; then
    # the product test runs the operator and its Jobs from this image: build this checkout's and load it
    export PGBACKUP_E2E_IMAGE=pgbackup-operator:e2e
    docker build -t "$PGBACKUP_E2E_IMAGE" .
    kind load docker-image "$PGBACKUP_E2E_IMAGE" --name "$CLUSTER"
  fi
else
  echo "e2e: docker+kind not available; using KUBECONFIG=${KUBECONFIG:-~/.kube/config}" >&2
fi
"$PYTEST" tests/e2e -rs "$@"
