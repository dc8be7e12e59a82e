"""Thin ctypes binding over the system's libbpf.so.1.

pylibbpf needs Python >= 3.12 and has no ring-buffer consumer, so the agent
binds the handful of libbpf calls it needs directly. Every function that returns
a pointer gets ``restype = c_void_p`` (otherwise ctypes truncates it to 32 bits).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class LibbpfError(OSError):
    """A libbpf call failed; the message says which call and why."""


def _load_lib() -> ctypes.CDLL:
    for name in ("libbpf.so.1", ctypes.util.find_library("bpf") or ""):
        if not name:
            continue
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    raise LibbpfError(
        0, "libbpf.so.1 not found: install it (Debian: apt-get install libbpf1 libbpf-dev)"
    )


@dataclass
class Libbpf:
    """The loaded library with typed signatures and a captured log."""

    lib: ctypes.CDLL = field(default_factory=_load_lib)
    log: list[str] = field(default_factory=list)
    _printer: object = None

    def __post_init__(self) -> None:
        L = self.lib
        vp, cp, ci, cu = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32
        sigs: dict[str, tuple[object, list[object]]] = {
            "bpf_object__open_file": (vp, [cp, vp]),
            "bpf_object__load": (ci, [vp]),
            "bpf_object__close": (None, [vp]),
            "bpf_object__find_map_by_name": (vp, [vp, cp]),
            "bpf_object__next_program": (vp, [vp, vp]),
            "bpf_object__next_map": (vp, [vp, vp]),
            "bpf_program__name": (cp, [vp]),
            "bpf_program__section_name": (cp, [vp]),
            "bpf_program__set_autoload": (ci, [vp, ctypes.c_bool]),
            "bpf_program__attach": (vp, [vp]),
            "bpf_program__fd": (ci, [vp]),
            "bpf_obj_get_info_by_fd": (ci, [ci, vp, ctypes.POINTER(cu)]),
            "bpf_link__destroy": (ci, [vp]),
            "bpf_map__name": (cp, [vp]),
            "bpf_map__fd": (ci, [vp]),
            "bpf_map__reuse_fd": (ci, [vp, ci]),
            "bpf_map__set_max_entries": (ci, [vp, cu]),
            "bpf_map__set_initial_value": (ci, [vp, vp, ctypes.c_size_t]),
            "bpf_map__max_entries": (cu, [vp]),
            "bpf_map_update_elem": (ci, [ci, vp, vp, ctypes.c_uint64]),
            "bpf_map_lookup_elem": (ci, [ci, vp, vp]),
            "bpf_map_delete_elem": (ci, [ci, vp]),
            "bpf_map_get_next_key": (ci, [ci, vp, vp]),
            "bpf_map_lookup_and_delete_elem": (ci, [ci, vp, vp]),
            "libbpf_num_possible_cpus": (ci, []),
            "libbpf_set_print": (vp, [vp]),
        }
        for name, (res, args) in sigs.items():
            fn = getattr(L, name)
            fn.restype = res
            fn.argtypes = args
        self._install_printer()

    def _install_printer(self) -> None:
        """Route libbpf's log (verifier output, attach errors) into ``self.log``."""
        libc = ctypes.CDLL(None)
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        buf = ctypes.create_string_buffer(4096)
        log = self.log

        def printer(level: int, fmt: bytes, args: int) -> int:
            vsnprintf(buf, len(buf), fmt, args)
            line = buf.value.decode(errors="replace").rstrip()
            if line:
                log.append(line)
                del log[:-500]
            return 0

        self._printer = _PRINT_FN(printer)
        self.lib.libbpf_set_print(ctypes.cast(self._printer, ctypes.c_void_p))

    def errno_error(self, call: str, ret: int | None = None) -> LibbpfError:
        err = ctypes.get_errno() or (abs(ret) if ret else 0)
        tail = "; ".join(self.log[-3:])
        return LibbpfError(err, f"{call}: {os.strerror(err) if err else 'failed'}" + (f" ({tail})" if tail else ""))

    def num_possible_cpus(self) -> int:
        return int(self.lib.libbpf_num_possible_cpus())


@dataclass
class BpfMap:
    lib: Libbpf
    ptr: int
    name: str

    @property
    def fd(self) -> int:
        return int(self.lib.lib.bpf_map__fd(self.ptr))

    @property
    def max_entries(self) -> int:
        return int(self.lib.lib.bpf_map__max_entries(self.ptr))

    def update(self, key: np.ndarray, value: np.ndarray) -> None:
        """Keys and values are numpy buffers laid out like the C types (see schemas/layouts.py)."""
        ret = self.lib.lib.bpf_map_update_elem(self.fd, key.ctypes.data, value.ctypes.data, 0)
        if ret != 0:
            raise self.lib.errno_error(f"bpf_map_update_elem({self.name})", ret)

    def lookup(self, key: np.ndarray, value: np.ndarray) -> bool:
        """Fills ``value`` in place; for per-CPU maps it must hold one slot per possible CPU."""
        return self.lib.lib.bpf_map_lookup_elem(self.fd, key.ctypes.data, value.ctypes.data) == 0

    def delete(self, key: np.ndarray) -> None:
        self.lib.lib.bpf_map_delete_elem(self.fd, key.ctypes.data)

    def entries(self, key_dtype: np.dtype, value_dtype: np.dtype, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """A hash map's entries now (at most ``limit``): keys and values as numpy arrays.

        The kernel may add or delete entries meanwhile; an entry deleted between
        listing and lookup is skipped, so the answer is a consistent subset.
        """
        keys = np.zeros(limit, dtype=key_dtype)
        values = np.zeros(limit, dtype=value_dtype)
        fn, lookup, fd = self.lib.lib.bpf_map_get_next_key, self.lib.lib.bpf_map_lookup_elem, self.fd
        prev, n = None, 0
        cur = np.zeros(1, dtype=key_dtype)
        while n < limit and fn(fd, None if prev is None else prev.ctypes.data, cur.ctypes.data) == 0:
            prev = cur.copy()
            if lookup(fd, cur.ctypes.data, values[n:n + 1].ctypes.data) == 0:
                keys[n] = cur[0]
                n += 1
        return keys[:n], values[:n]

    def take_all(self, key_dtype: np.dtype, value_dtype: np.dtype, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """A hash map's entries, each removed as it is read (lookup-and-delete in one call): an
        increment the kernel makes meanwhile lands either in the value read or in a new entry,
        never between a read and a delete."""
        keys = np.zeros(limit, dtype=key_dtype)
        values = np.zeros(limit, dtype=value_dtype)
        fn, take, fd = self.lib.lib.bpf_map_get_next_key, self.lib.lib.bpf_map_lookup_and_delete_elem, self.fd
        cur = np.zeros(1, dtype=key_dtype)
        n = 0
        while n < limit and fn(fd, None, cur.ctypes.data) == 0:  # the first key left: the map shrinks
            if take(fd, cur.ctypes.data, values[n:n + 1].ctypes.data) != 0:
                break  # gone meanwhile (LRU) or unsupported: the caller's counts tell what is missing
            keys[n] = cur[0]
            n += 1
        return keys[:n], values[:n]


@dataclass
class BpfProgram:
    lib: Libbpf
    ptr: int

    @property
    def name(self) -> str:
        return self.lib.lib.bpf_program__name(self.ptr).decode()

    @property
    def section(self) -> str:
        return self.lib.lib.bpf_program__section_name(self.ptr).decode()

    def set_autoload(self, on: bool) -> None:
        self.lib.lib.bpf_program__set_autoload(self.ptr, on)

    def recursion_misses(self) -> int:
        """Runs the kernel skipped because the program was already running on that CPU (an
        interrupt's wake-up landing inside a wake-up the program was handling): lost events
        that no ring or counter of ours sees. -1 when the kernel cannot tell (< 5.12)."""
        fd = int(self.lib.lib.bpf_program__fd(self.ptr))
        if fd < 0:
            return -1
        info = np.zeros(1, dtype=PROG_INFO)
        size = ctypes.c_uint32(PROG_INFO.itemsize)
        if self.lib.lib.bpf_obj_get_info_by_fd(fd, info.ctypes.data, ctypes.byref(size)) != 0:
            return -1
        if size.value < PROG_INFO.fields["recursion_misses"][1] + 8:
            return -1
        return int(info["recursion_misses"][0])

    def attach(self) -> int:
        """Attach by section name; returns the link pointer or raises with errno."""
        ctypes.set_errno(0)
        link = self.lib.lib.bpf_program__attach(self.ptr)
        if not link:
            raise self.lib.errno_error(f"attach {self.section}")
        return int(link)


# struct bpf_prog_info up to the fields read here (uapi/linux/bpf.h; offsets fixed by the ABI)
PROG_INFO = np.dtype({"names": ["type", "id", "run_time_ns", "run_cnt", "recursion_misses"],
                      "formats": ["<u4", "<u4", "<u8", "<u8", "<u8"],
                      "offsets": [0, 4, 192, 200, 208], "itemsize": 232})


@dataclass
class BpfObject:
    """One compiled probe object: open → (resize/reuse maps) → load → attach."""

    lib: Libbpf
    path: str
    ptr: int = 0
    links: list[int] = field(default_factory=list)

    def open(self) -> BpfObject:
        ctypes.set_errno(0)
        ptr = self.lib.lib.bpf_object__open_file(self.path.encode(), None)
        if not ptr:
            raise self.lib.errno_error(f"open {self.path}")
        self.ptr = int(ptr)
        return self

    def maps(self) -> Iterator[BpfMap]:
        m = self.lib.lib.bpf_object__next_map(self.ptr, None)
        while m:
            yield BpfMap(self.lib, int(m), self.lib.lib.bpf_map__name(m).decode())
            m = self.lib.lib.bpf_object__next_map(self.ptr, m)

    def programs(self) -> Iterator[BpfProgram]:
        p = self.lib.lib.bpf_object__next_program(self.ptr, None)
        while p:
            yield BpfProgram(self.lib, int(p))
            p = self.lib.lib.bpf_object__next_program(self.ptr, p)

    def map(self, name: str) -> BpfMap:
        m = self.lib.lib.bpf_object__find_map_by_name(self.ptr, name.encode())
        if not m:
            raise LibbpfError(0, f"{self.path}: no map named {name}")
        return BpfMap(self.lib, int(m), name)

    def reuse_map(self, name: str, fd: int) -> None:
        ret = self.lib.lib.bpf_map__reuse_fd(self.map(name).ptr, fd)
        if ret != 0:
            raise self.lib.errno_error(f"reuse map {name}", ret)

    def set_max_entries(self, name: str, n: int) -> None:
        ret = self.lib.lib.bpf_map__set_max_entries(self.map(name).ptr, n)
        if ret != 0:
            raise self.lib.errno_error(f"resize map {name}", ret)

    def set_initial_value(self, name: str, data: bytes) -> None:
        """A global data section's contents before load (read-only ones are frozen at load)."""
        buf = ctypes.create_string_buffer(data, len(data))
        ret = self.lib.lib.bpf_map__set_initial_value(self.map(name).ptr, buf, len(data))
        if ret != 0:
            raise self.lib.errno_error(f"set the initial value of {name}", ret)

    def load(self) -> None:
        ctypes.set_errno(0)
        ret = self.lib.lib.bpf_object__load(self.ptr)
        if ret != 0:
            raise self.lib.errno_error(f"load {os.path.basename(self.path)}", ret)

    def close(self) -> None:
        """Detach every link, then free the object. Safe to call twice."""
        for link in self.links:
            self.lib.lib.bpf_link__destroy(link)
        self.links.clear()
        if self.ptr:
            self.lib.lib.bpf_object__close(self.ptr)
            self.ptr = 0
