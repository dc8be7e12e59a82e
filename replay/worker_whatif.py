"""What-if replays never let a call with effects outside the process run for real.

A what-if replay changes timing, so the program may take a path the recording never saw; the engine
answers what the log holds and lets the rest run for real (``ReplayEngine._lenient``). For a call
that only reads or computes that is what makes the what-if work; for a call that changes the world
(connects somewhere, sends, writes or deletes a file, signals another process, forks, execs) it is
a replay doing real things on the worker's host. This policy answers those with ``EPERM`` instead,
and says so in the result's notes (the program sees a refused call, as under a strict sandbox).

The engine asks ``Session.guard`` about every call its lenient matcher cannot match, before it
would let it run for real; ``kprobe replay --what-if`` uses the same guard.
"""

from __future__ import annotations

from kprobe.replay.engine import ReplayEngine

O_ACCMODE, O_CREAT, O_TRUNC, O_APPEND = 0o3, 0o100, 0o1000, 0o2000
CLONE_THREAD = 0x10000
# syscall numbers (x86-64)
NETWORK_OUT = {42, 44, 46, 307, 49, 50}  # connect, sendto, sendmsg, sendmmsg, bind, listen
FD_WRITES = {1, 18, 20, 296, 328, 40, 275, 326, 285, 77, 91, 93, 190, 199}
# write pwrite64 writev pwritev pwritev2 sendfile splice copy_file_range fallocate ftruncate fchmod fchown fsetxattr
# fremovexattr
PATH_CHANGES = {87, 263, 82, 264, 316, 83, 258, 84, 86, 265, 88, 266, 90, 268, 92, 94, 260, 76, 280, 235, 132, 188, 189,
                197, 198, 133, 259}
# unlink(at) rename(at,at2) mkdir(at) rmdir link(at) symlink(at) chmod fchmodat chown lchown fchownat truncate
# utimensat utimes utime setxattr lsetxattr removexattr lremovexattr mknod(at)
PROCESS = {57, 58, 59, 322, 101, 310, 311, 169, 165, 166, 155, 170, 171, 175, 176, 313, 246, 320}
# fork vfork execve execveat ptrace process_vm_readv/writev reboot mount umount2 pivot_root sethostname setdomainname
# init_module delete_module finit_module kexec_load kexec_file_load
SIGNALS = {62, 200, 234}  # kill, tkill, tgkill
OPENS = {2: 1, 257: 2}  # open(path, flags), openat(dirfd, path, flags): index of flags


def _tgid_of(tid: int) -> int | None:
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def external_effect(nr: int, args: tuple[int, ...], tid: int, emulated: set[int]) -> str | None:
    """Why this call, if it ran for real, would reach outside the replayed process (None: it would not)."""
    fd = args[0] & 0xFFFFFFFF if args else -1
    if nr in NETWORK_OUT:
        return "network"
    if nr in FD_WRITES and fd not in emulated and fd > 2:
        return f"write to real fd {fd}"
    if nr in OPENS:
        flags = args[OPENS[nr]]
        if flags & O_ACCMODE or flags & (O_CREAT | O_TRUNC | O_APPEND):
            return "open for writing"
    if nr in PATH_CHANGES:
        return "file system change"
    if nr in PROCESS:
        return "process control"
    if nr in (56, 435):  # clone, clone3: threads only
        flags = args[0] if nr == 56 else CLONE_THREAD  # clone3 args are in memory: the engine refuses forks
        if not flags & CLONE_THREAD:
            return "fork"
    if nr in SIGNALS:
        target = args[0] if nr != 200 else (_tgid_of(args[0] & 0xFFFFFFFF) or -1)
        own = _tgid_of(tid)
        if own is None or (target & 0xFFFFFFFF) != own:
            return "signal to another process"
    return None


def guard(s, tid: int, nr: int, args: tuple[int, ...]) -> str | None:  # s: replay.session.Session
    """The engine's what-if hook (Session.guard): why an unmatched call must not run, or None."""
    return external_effect(nr, tuple(args), tid, s.emulated)


class SafeWhatIfEngine(ReplayEngine):
    """ReplayEngine whose unmatched calls with external effects are answered EPERM (see module doc)."""

    def __post_init__(self) -> None:
        self.guard = guard

    @property
    def refused(self) -> int:
        return self.s.refused if hasattr(self, "s") else 0


def engine_class(what_if: bool) -> type[ReplayEngine]:
    return SafeWhatIfEngine if what_if else ReplayEngine


__all__ = ["SafeWhatIfEngine", "external_effect", "engine_class", "guard"]
