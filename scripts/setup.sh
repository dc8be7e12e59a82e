#!/usr/bin/env bash
# Idempotent set-up of everything kprobe needs on a fresh Debian machine:
# system packages (clang, bpftool, libbpf), a virtualenv with the project, the probe objects.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in clang llvm libbpf-dev bpftool make iproute2 iptables maven openjdk-17-jdk-headless chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.kprobe-deps
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python dependencies"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[scaleout,otel,graph,replay,dev]"
  touch "$stamp"
fi

make -s -C probes
make -s -C replay   # the replay hot path (replay/fastpath.c, loaded with ctypes)
echo "setup: ok"
