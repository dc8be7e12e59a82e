"""Generate schemas/layouts.py (numpy record layouts) from schemas/records.h, and
schemas/syscalls.h (the probes' syscall numbers) from schemas/syscall_table.py.

The C header is the single definition of what crosses the ring buffers; this
generator keeps the Python side from being written by hand, and
tests/test_layouts.py fails when the committed output drifts from the header or
from the BTF of the compiled probe objects.

    python -m kprobe.schemas.gen_layouts            # rewrite layouts.py and syscalls.h
    python -m kprobe.schemas.gen_layouts --check    # exit 1 if either is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from kprobe.schemas import gen_syscalls

HERE = Path(__file__).resolve().parent
HEADER = HERE / "records.h"
OUTPUT = HERE / "layouts.py"

_C_TYPES = {  # C type -> (numpy format, size)
    "__u8": ("u1", 1), "__u16": ("<u2", 2), "__u32": ("<u4", 4), "__u64": ("<u8", 8),
    "__s8": ("i1", 1), "__s16": ("<i2", 2), "__s32": ("<i4", 4), "__s64": ("<i8", 8),
    "char": ("S", 1),
}


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    count: int  # 0 for a scalar

    @property
    def size(self) -> int:
        return _C_TYPES[self.ctype][1] * max(self.count, 1)

    @property
    def align(self) -> int:
        return _C_TYPES[self.ctype][1]

    def numpy_format(self) -> str:
        fmt, _ = _C_TYPES[self.ctype]
        if self.ctype == "char":
            return f"S{self.count}"
        return f"({self.count},){fmt}" if self.count else fmt


@dataclass(frozen=True)
class Struct:
    name: str
    fields: tuple[Field, ...]

    def layout(self) -> tuple[list[int], int]:
        """Offsets by the C rules (natural alignment); the header pads by hand, so no holes expected."""
        offsets, off, max_align = [], 0, 1
        for f in self.fields:
            off = (off + f.align - 1) // f.align * f.align
            offsets.append(off)
            off += f.size
            max_align = max(max_align, f.align)
        size = (off + max_align - 1) // max_align * max_align
        return offsets, size


def parse(text: str) -> tuple[dict[str, int], list[Struct]]:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    consts: dict[str, int] = {}
    for name, value in re.findall(r"#define\s+(KP_\w+)\s+(\d+)", text):
        consts[name] = int(value)
    for body in re.findall(r"enum\s+\w+\s*\{(.*?)\}", text, flags=re.S):
        for name, value in re.findall(r"(KP_\w+)\s*=\s*(\d+)", body):
            consts[name] = int(value)
    structs = []
    for name, body in re.findall(r"struct\s+(kp_\w+)\s*\{(.*?)\};", text, flags=re.S):
        fields = []
        for ctype, fname, dim in re.findall(r"(\w+)\s+(\w+)\s*(?:\[(\w+)\])?\s*;", body):
            if ctype not in _C_TYPES:
                raise ValueError(f"struct {name}.{fname}: unsupported type {ctype}")
            count = 0 if not dim else (int(dim) if dim.isdigit() else consts[dim])
            fields.append(Field(fname, ctype, count))
        structs.append(Struct(name, tuple(fields)))
    return consts, structs


def render(consts: dict[str, int], structs: list[Struct]) -> str:
    out = [
        '"""Record layouts generated from schemas/records.h by kprobe.schemas.gen_layouts: do not edit."""',
        "",
        "import numpy as np",
        "",
    ]
    for name, value in consts.items():
        out.append(f"{name} = {value}")
    out.append("")
    for s in structs:
        offsets, size = s.layout()
        names = ", ".join(f'"{f.name}"' for f in s.fields)
        formats = ", ".join(f'"{f.numpy_format()}"' for f in s.fields)
        offs = ", ".join(str(o) for o in offsets)
        out += [
            "",
            f"{s.name.upper()} = np.dtype(",
            "    {",
            f'        "names": [{names}],',
            f'        "formats": [{formats}],',
            f'        "offsets": [{offs}],',
            f'        "itemsize": {size},',
            "    }",
            ")",
        ]
    out += ["", "", "STRUCTS = {"]
    out += [f'    "{s.name}": {s.name.upper()},' for s in structs]
    out += ["}", ""]
    return "\n".join(out)


def generate() -> str:
    consts, structs = parse(HEADER.read_text())
    return render(consts, structs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if layouts.py or syscalls.h is stale")
    args = ap.parse_args(argv)
    outputs = {OUTPUT: generate(), gen_syscalls.OUTPUT: gen_syscalls.render()}
    if args.check:
        stale = [path for path, text in outputs.items() if not path.exists() or path.read_text() != text]
        for path in stale:
            print(f"{path} is stale: run python -m kprobe.schemas.gen_layouts", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
