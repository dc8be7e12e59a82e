"""The embedded engine's allocator runs with the agent's options, read back from the engine itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kprobe.sinks.chdb_malloc import AGENT_OPTIONS, ENV, configure, options

PROBE = """
import json, re, sys, tempfile
from pathlib import Path
from kprobe.sinks.chdb_store import ChdbStore
from kprobe.sinks import chdb_malloc
s = ChdbStore(Path(tempfile.mkdtemp()))
t = s.query("SELECT * FROM system.jemalloc_stats", "TSV").decode().replace("\\\\n", "\\n")
opt = dict(re.findall(r"^  opt\\.(\\w+): (\\S+)", t, re.M))
# a second configure in the same process cannot change a loaded engine and says so
print(json.dumps({"opt": opt, "again": chdb_malloc.configure()}))
"""


def _engine_options(env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_engine_returns_freed_pages_soon_and_does_not_profile() -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    r = _engine_options(env)
    opt = r["opt"]
    assert opt["dirty_decay_ms"] == "1000" and opt["muzzy_decay_ms"] == "0", opt   # built with 5000
    assert opt["prof_active"] == "false", opt                                      # built with true
    assert opt["narenas"] == "1" and opt["percpu_arena"] == '"disabled"' and opt["tcache_max"] == "1024", opt
    assert r["again"] is False


def test_the_users_options_come_last_and_win() -> None:
    env = {**os.environ, ENV: "dirty_decay_ms:2500"}
    opt = _engine_options(env)["opt"]
    assert opt["dirty_decay_ms"] == "2500" and opt["prof_active"] == "false", opt


def test_options_and_configure_on_a_plain_environment() -> None:
    assert options(None) == AGENT_OPTIONS and options("x:1") == f"{AGENT_OPTIONS},x:1"
    env: dict[str, str] = {}
    loaded = any(n == "chdb" or n.startswith(("chdb.", "_chdb")) for n in sys.modules)
    assert configure(env) is (not loaded)
    assert env == ({} if loaded else {ENV: AGENT_OPTIONS})
