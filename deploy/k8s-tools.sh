#!/usr/bin/env bash
# The chart's check tools, built once into deploy/.cache/k8s-tools (git-ignored); safe to re-run:
# what is there already is not built or downloaded again.
#
#   helm              helm.sh/helm/v4 (go install from the Go module proxy, ~2.5 min on 2 cores)
#   kubectl-validate  sigs.k8s.io/kubectl-validate (go install; validates manifests against OpenAPI v3
#                     schemas with the API server's own schema code: unknown fields, types, formats, enums)
#   schemas/<v>/      the OpenAPI v3 schemas of Kubernetes <v>, taken from the k8s.io/kubernetes module
#                     source (api/openapi-spec/v3), laid out as kubectl-validate's --local-schemas wants
#   crds/             the Prometheus operator's ServiceMonitor CRD (its Go module carries it)
#
# Usage: deploy/k8s-tools.sh [--print-env]
# Writes deploy/.cache/k8s-tools/env (HELM=, KUBECTL_VALIDATE=, K8S_SCHEMAS=, K8S_CRDS=) and, with
# --print-env, prints it. Needs `go` (>= 1.21: older toolchains are fetched by GOTOOLCHAIN).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v4.3.2
VALIDATE_VERSION=v0.0.4
# Kubernetes 1.26 (the oldest supported) and the newest release the module proxy serves
# (`go list -m k8s.io/kubernetes@latest`, 2026-12-07).
K8S_VERSIONS=(v1.26.15 v1.37.2)
PROMETHEUS_OPERATOR_VERSION=v0.85.0

CACHE=${KPROBE_K8S_TOOLS:-$PWD/deploy/.cache/k8s-tools}
mkdir -p "$CACHE"

GO=$(command -v go || true)
[ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; }
if [ -z "$GO" ]; then
  echo "k8s-tools: no Go toolchain (go not on PATH nor /usr/local/go/bin/go): helm and kubectl-validate" \
       "are built from the Go module proxy with 'go install'" >&2
  exit 3
fi

say() { echo "k8s-tools: $*" >&2; }

# go install PKG@VERSION into $CACHE/<name>-<version>/, through a temporary GOBIN so that an
# interrupted build leaves nothing that looks finished.
build() {
  local name=$1 pkg=$2 version=$3 dir="$CACHE/$1-$3"
  if [ -x "$dir/$name" ]; then return 0; fi
  say "building $name $version (go install $pkg@$version)"
  local t0=$SECONDS tmp
  tmp=$(mktemp -d "$CACHE/.build-$name.XXXXXX")
  if ! GOBIN="$tmp" GOFLAGS="${GOFLAGS:-} -trimpath" "$GO" install "$pkg@$version"; then
    rm -rf "$tmp"
    say "FAILED: go install $pkg@$version (Go module proxy: $("$GO" env GOPROXY))"
    exit 4
  fi
  rm -rf "$dir" && mv "$tmp" "$dir"
  say "built $name $version in $((SECONDS - t0)) s"
}

# module source dir of PATH@VERSION (downloaded into the Go module cache when missing)
module_dir() {
  local out
  if ! out=$("$GO" mod download -json "$1@$2"); then
    say "FAILED: go mod download $1@$2 (Go module proxy: $("$GO" env GOPROXY))"
    exit 4
  fi
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$out"
}

schemas() {
  local v=$1 dest="$CACHE/schemas/$1"
  if [ -f "$dest/.complete" ]; then return 0; fi
  say "fetching the OpenAPI v3 schemas of Kubernetes $v (module k8s.io/kubernetes@$v)"
  local src tmp f base g ver
  src="$(module_dir k8s.io/kubernetes "$v")/api/openapi-spec/v3"
  [ -d "$src" ] || { say "FAILED: k8s.io/kubernetes@$v has no api/openapi-spec/v3"; exit 4; }
  tmp=$(mktemp -d "$CACHE/.schemas.XXXXXX")
  for f in "$src"/*_openapi.json; do
    base=$(basename "$f" _openapi.json)          # api__v1, apis__apps__v1 (group indexes have no version)
    case "$base" in
      api__*)      mkdir -p "$tmp/api" && cp "$f" "$tmp/api/${base#api__}.json" ;;
      apis__*__*)  g=${base#apis__}; ver=${g##*__}; g=${g%__*}
                   mkdir -p "$tmp/apis/$g" && cp "$f" "$tmp/apis/$g/$ver.json" ;;
    esac
  done
  chmod -R u+w "$tmp"
  touch "$tmp/.complete"
  rm -rf "$dest" && mkdir -p "$(dirname "$dest")" && mv "$tmp" "$dest"
}

crds() {
  local dest="$CACHE/crds/$PROMETHEUS_OPERATOR_VERSION"
  if [ -f "$dest/.complete" ]; then return 0; fi
  say "fetching the ServiceMonitor CRD (module github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION)"
  local src
  src="$(module_dir github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION")"
  mkdir -p "$dest"
  cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$dest/"
  chmod -R u+w "$dest"
  touch "$dest/.complete"
}

build helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION"
build kubectl-validate sigs.k8s.io/kubectl-validate "$VALIDATE_VERSION"
for v in "${K8S_VERSIONS[@]}"; do schemas "$v"; done
crds

{
  echo "HELM=$CACHE/helm-$HELM_VERSION/helm"
  echo "HELM_VERSION=$HELM_VERSION"
  echo "KUBECTL_VALIDATE=$CACHE/kubectl-validate-$VALIDATE_VERSION/kubectl-validate"
  echo "K8S_SCHEMAS='$(for v in "${K8S_VERSIONS[@]}"; do printf '%s ' "$CACHE/schemas/$v"; done | sed 's/ $//')'"
  echo "K8S_CRDS=$CACHE/crds/$PROMETHEUS_OPERATOR_VERSION"
} >"$CACHE/env.tmp"
mv "$CACHE/env.tmp" "$CACHE/env"
if [ "${1:-}" = "--print-env" ]; then cat "$CACHE/env"; fi
