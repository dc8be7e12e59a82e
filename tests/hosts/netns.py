"""Network namespaces as "hosts" for the many-hosts tests: created with unique names, joined by veths,
always deleted (a leaked netns outlives the test run on a shared VM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Hosts:
    """``names`` netns on one /24 subnet each pair joined through the first one's side, addresses 10.RR.N.x."""

    tag: str = field(default_factory=lambda: f"kph{os.getpid() % 10000}")
    made: list[str] = field(default_factory=list)

    def netns(self, name: str) -> str:
        full = f"{self.tag}-{name}"
        ip("netns", "add", full)
        self.made.append(full)
        ip("-n", full, "link", "set", "lo", "up")
        return full

    def link(self, a: str, a_addr: str, b: str, b_addr: str, n: int) -> None:
        """A veth pair between netns a and b, /30 addresses a_addr and b_addr."""
        va, vb = f"{self.tag[-4:]}a{n}", f"{self.tag[-4:]}b{n}"
        ip("link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b)
        ip("-n", a, "addr", "add", f"{a_addr}/30", "dev", va)
        ip("-n", b, "addr", "add", f"{b_addr}/30", "dev", vb)
        ip("-n", a, "link", "set", va, "up")
        ip("-n", b, "link", "set", vb, "up")

    def path(self, full: str) -> str:
        return f"/run/netns/{full}"

    def close(self) -> None:
        for full in self.made:        # deleting a netns deletes its veth ends
            subprocess.run(["ip", "netns", "del", full], capture_output=True)
        self.made.clear()


class Ingest:
    """`kprobe dataflow ingest` as a child process into a test-private database and topic prefix."""

    def __init__(self, stack: dict[str, str], prefix: str, database: str, state: Path):
        self.argv = [sys.executable, "-m", "kprobe", "dataflow", "ingest", "--brokers", stack["KAFKA_BOOTSTRAP"],
                     "--clickhouse", f"{stack['CLICKHOUSE_HOST']}:{stack['CLICKHOUSE_PORT']}",
                     "--clickhouse-http-port", stack["CLICKHOUSE_HTTP_PORT"], "--database", database,
                     "--prefix", prefix, "--workers", "2", "--state-dir", str(state), "--epoch-s", "0.5"]
        self.state, self.log = state, state / "ingest.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Ingest:
        self.state.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.argv, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=REPO)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
