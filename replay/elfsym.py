"""Minimal ELF64 dynamic-symbol reader: function addresses in libc (for uprobes) and in the vDSO.

libbpf 1.1's own symbol lookup fails on this Debian libc (versioned duplicates such as
clock_gettime@GLIBC_2.2.5 / @@GLIBC_2.17), and the vDSO image only exists in memory, so both
paths use this small parser over bytes: section headers -> .dynsym/.dynstr, program headers ->
file offsets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SHT_DYNSYM = 11
PF_X = 1
PT_LOAD = 1
STT_FUNC = 2


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int  # virtual address as linked
    size: int


def _check(image: bytes) -> None:
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise ValueError("not a little-endian ELF64 image")


def dynamic_functions(image: bytes) -> dict[str, Symbol]:
    """Defined function symbols of .dynsym; for versioned duplicates the default (last) wins."""
    _check(image)
    shoff, = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", image, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", image, shoff + i * shentsize) for i in range(shnum)]
    out: dict[str, Symbol] = {}
    for sh in sections:
        if sh[1] != SHT_DYNSYM:
            continue
        sym_off, sym_size, link, entsize = sh[4], sh[5], sh[6], sh[9] or 24
        str_off = sections[link][4]
        for i in range(sym_size // entsize):
            name_off, info, _other, shndx, value, size = struct.unpack_from("<IBBHQQ", image, sym_off + i * entsize)
            if shndx == 0 or (info & 0xF) != STT_FUNC or value == 0:
                continue
            end = image.index(b"\0", str_off + name_off)
            name = image[str_off + name_off : end].decode()
            out[name] = Symbol(name, value, size)
    return out


def file_offset(image: bytes, vaddr: int) -> int:
    """File offset of a virtual address (what uprobes attach to)."""
    _check(image)
    phoff, = struct.unpack_from("<Q", image, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", image, 0x36)
    for i in range(phnum):
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", image, phoff + i * phentsize
        )
        if p_type == PT_LOAD and p_vaddr <= vaddr < p_vaddr + p_filesz:
            return vaddr - p_vaddr + p_offset
    raise ValueError(f"address {vaddr:#x} is in no loadable segment")


def executable_segments(image: bytes) -> list[tuple[int, int, int]]:
    """(file offset, virtual address, size in the file) of each loadable executable segment."""
    _check(image)
    phoff, = struct.unpack_from("<Q", image, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", image, 0x36)
    out = []
    for i in range(phnum):
        p_type, flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", image, phoff + i * phentsize
        )
        if p_type == PT_LOAD and flags & PF_X:
            out.append((p_offset, p_vaddr, p_filesz))
    return out
