"""The C header and the generated numpy layouts must agree, byte for byte."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kprobe.schemas import gen_layouts, gen_syscalls, layouts

HEADER = Path(gen_layouts.__file__).with_name("records.h")


def test_generated_layouts_are_up_to_date():
    assert gen_layouts.OUTPUT.read_text() == gen_layouts.generate(), "run: python -m kprobe.schemas.gen_layouts"


def test_generated_syscall_header_is_up_to_date():
    """The probes' KP_NR_* names come from schemas/syscall_table.py (tests/test_syscall_table.py)."""
    assert gen_syscalls.OUTPUT.read_text() == gen_syscalls.render(), "run: python -m kprobe.schemas.gen_layouts"
    assert gen_layouts.main(["--check"]) == 0


@pytest.mark.skipif(shutil.which("clang") is None or shutil.which("bpftool") is None,
                    reason="needs clang and bpftool (installed by scripts/setup.sh)")
def test_numpy_offsets_match_what_clang_compiles_for_bpf(tmp_path):
    src = tmp_path / "all.c"
    names = list(layouts.STRUCTS)
    src.write_text(
        "typedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned int __u32;\n"
        "typedef unsigned long long __u64; typedef int __s32; typedef long long __s64;\n"
        f'#include "{HEADER}"\n' + "".join(f"struct {n} g_{n};\n" for n in names)
    )
    obj = tmp_path / "all.o"
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-c", str(src), "-o", str(obj)], check=True)
    raw = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(obj), "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    types = {t.get("name"): t for t in json.loads(raw)["types"] if t.get("kind") == "STRUCT"}
    for name, dtype in layouts.STRUCTS.items():
        btf = types[name]
        assert btf["size"] == dtype.itemsize, name
        got = {m["name"]: m["bits_offset"] // 8 for m in btf["members"]}
        want = {f: dtype.fields[f][1] for f in dtype.names}
        assert got == want, name


def test_every_ring_record_is_a_multiple_of_8_bytes():
    for name, dtype in layouts.STRUCTS.items():
        assert dtype.itemsize % 8 == 0, name


def test_header_has_no_implicit_padding():
    """Hand-padded structs keep the numpy view and the kernel's stores identical."""
    _, structs = gen_layouts.parse(HEADER.read_text())
    for s in structs:
        offsets, size = s.layout()
        assert sum(f.size for f in s.fields) == size, s.name
    assert re.search(r"KP_EV_MAX = \d+", gen_layouts.generate())
