"""Render schemas/syscalls.h, the probes' syscall numbers, from schemas/syscall_table.py.

The probes include the generated header instead of spelling numbers; gen_layouts writes it with
the record layouts (``python -m kprobe.schemas.gen_layouts``) and ``--check`` fails when it is
stale, so the C and Python sides cannot disagree on a number.
"""

from __future__ import annotations

from pathlib import Path

from kprobe.schemas.syscall_table import NR_MAX, TABLE, c_name

OUTPUT = Path(__file__).resolve().parent / "syscalls.h"


def render() -> str:
    width = max(len(c_name(s)) for s in TABLE)
    out = [
        "/* Syscall numbers (x86_64) generated from schemas/syscall_table.py by",
        " * kprobe.schemas.gen_layouts: do not edit. */",
        "#ifndef KPROBE_SYSCALLS_H",
        "#define KPROBE_SYSCALLS_H",
        "",
        f"#define {'KP_NR_MAX':<{width}} {NR_MAX}",
        "",
    ]
    out += [f"#define {c_name(s):<{width}} {s.nr}" for s in TABLE]
    out += ["", "#endif", ""]
    return "\n".join(out)
