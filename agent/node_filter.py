"""One agent per node: record only the processes of one network namespace and/or cgroup.

Why: on Kubernetes (and in tests/hosts, where "hosts" are network namespaces) several nodes' processes
can share one kernel view, and an agent must never record another node's pods as its own: their rows
would carry this host's name and join the wrong chain. The filter rides on the existing watch list
(kp_watched, common.bpf.h): the high-volume streams (off-CPU, syscalls, faults, socket I/O) follow
watched processes and their children. Three ways in:

* at start and every RESCAN_S, the agent lists /proc and watches every process whose network
  namespace (``/proc/PID/ns/net``'s inode) and cgroup (``/proc/PID/cgroup``) match: the processes
  already there, those that entered by setns without exec, and cgroup v1 moves;
* the sched probe's exec hook watches a process exec'd inside the namespace / cgroup v2 at once
  (``kp_in_node``), so a short-lived command is not missed between rescans;
* fork follows a watched parent (the kernel already did that for watch lists).

What stays host-wide, as for every watch list: reclaim stalls, OOM kills, TCP state changes,
retransmits and block I/O (the culprit is usually not the victim; in a real one-agent-per-node
deployment they are the node's own anyway).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RESCAN_S = 1.0
CGROUP2_MOUNTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))


class NodeFilterError(ValueError):
    """A --netns/--cgroup path that cannot be used: said precisely, before anything attaches."""


def _is_cgroup2(path: Path) -> bool:
    return (path / "cgroup.controllers").exists() or (path / "cgroup.procs").exists() and \
        (path / "cgroup.type").exists()


def _cgroup_mount(path: Path) -> Path:
    """The hierarchy mount point holding ``path`` (the longest mount that is a prefix of it)."""
    best = Path("/")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] in ("cgroup", "cgroup2"):
            m = Path(parts[1])
            if (path == m or m in path.parents) and len(m.parts) > len(best.parts):
                best = m
    if best == Path("/"):
        raise NodeFilterError(f"--cgroup {path}: not inside a mounted cgroup hierarchy")
    return best


@dataclass(frozen=True)
class NodeFilter:
    netns: Path | None = None
    cgroup: Path | None = None
    netns_ino: int = 0
    cgroup_rel: str = ""        # path inside its hierarchy, as /proc/PID/cgroup spells it ("/a/b")
    cgroup_id: int = 0          # cgroup v2 id (the directory's inode) for the probe's exec hook; 0 on v1
    cgroup_level: int = 0

    @classmethod
    def of(cls, netns: Path | None, cgroup: Path | None) -> NodeFilter | None:
        if netns is None and cgroup is None:
            return None
        ino = 0
        if netns is not None:
            try:
                ino = os.stat(netns).st_ino
            except OSError as e:
                raise NodeFilterError(f"--netns {netns}: {e.strerror}") from None
            if not _is_netns(netns):
                raise NodeFilterError(f"--netns {netns}: not a network namespace (e.g. /run/netns/NAME or "
                                      f"/proc/PID/ns/net)")
        rel, cid, level = "", 0, 0
        if cgroup is not None:
            cg = cgroup.resolve()
            if not cg.is_dir():
                raise NodeFilterError(f"--cgroup {cgroup}: no such cgroup directory")
            mount = _cgroup_mount(cg)
            rel_parts = cg.relative_to(mount).parts
            rel = "/" + "/".join(rel_parts)
            if _is_cgroup2(mount):
                cid, level = os.stat(cg).st_ino, len(rel_parts)
        return cls(netns, cgroup, ino, rel, cid, level)

    def describe(self) -> str:
        parts = []
        if self.netns is not None:
            parts.append(f"netns {self.netns} (inode {self.netns_ino})")
        if self.cgroup is not None:
            parts.append(f"cgroup {self.cgroup}" + ("" if self.cgroup_id else " (v1: found by /proc rescans)"))
        return " and ".join(parts)

    def matches(self, pid: int) -> bool:
        """Whether process ``pid`` belongs to this node now (False when it is gone or unreadable)."""
        try:
            if self.netns_ino and os.stat(f"/proc/{pid}/ns/net").st_ino != self.netns_ino:
                return False
            if self.cgroup_rel:
                lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                want = self.cgroup_rel.rstrip("/") or "/"
                if not any(_under(line.split(":", 2)[-1], want) for line in lines):
                    return False
        except OSError:
            return False
        return True

    def scan(self) -> list[int]:
        """Every process on the node now."""
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit() and self.matches(int(d)):
                out.append(int(d))
        return out


def _under(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root + "/")


def _is_netns(path: Path) -> bool:
    """A namespace file's link names its type: net:[inode] (/proc/PID/ns/net), or a bind mount of one."""
    try:
        return os.readlink(path).startswith("net:")
    except OSError:
        pass
    try:   # /run/netns/NAME is a bind mount of an nsfs inode: compare its device with a known netns file's
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False
