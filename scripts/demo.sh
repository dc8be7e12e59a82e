#!/usr/bin/env bash
# The README's main job (embedded mode, one machine, no servers): a payment times out because a
# batch job squeezes the uninstrumented settlement service it depends on; kprobe, recording the
# whole time, prints the causal chain down to the kernel within about a second.
# Needs root (eBPF, a memory cgroup, real-time priority). Data stay in ${KPROBE_DEMO_DATA:-/tmp/kprobe-demo}.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/kprobe demo --data "${KPROBE_DEMO_DATA:-/tmp/kprobe-demo}" "$@"
