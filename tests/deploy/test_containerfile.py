"""deploy/Containerfile's build stage, run for real outside a container.

No container engine runs here, so the test plays the engine's part for the build stage: a clean
temporary directory gets exactly what the COPY lines copy, ARG/ENV/WORKDIR are applied (the
virtualenv goes under the temporary directory instead of /opt/kprobe), and every RUN line runs with
bash in it, with the image's PATH (Debian's python3, not a developer's). The package-installing
RUN line is not run on the host (it would also empty the host's apt lists): its packages must be
installed (scripts/setup.sh and the machine provide them) and the test says which are missing.
The result must be what the runtime stage copies: a virtualenv whose `kprobe` runs, with the
probe objects and replay's shared library inside.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "deploy" / "Containerfile"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def instructions(text: str) -> list[tuple[str, str, str]]:
    """(stage, INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    out, stage = [], ""
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            m = re.search(r"\bAS\s+(\S+)", rest, re.I)
            stage = m.group(1) if m else ""
        out.append((stage, op, rest.strip()))
    return out


def expand(s: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), s)


def apt_packages(run: str) -> list[str]:
    m = re.search(r"apt-get install ([^&;]+)", run)
    assert m, run
    return [w for w in shlex.split(m.group(1)) if not w.startswith("-")]


def test_containerfile_has_a_build_and_a_slim_runtime_stage():
    ins = instructions(CONTAINERFILE.read_text())
    stages = [rest for _, op, rest in ins if op == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS build") and stages[1].endswith("AS runtime")
    runtime = [(op, rest) for st, op, rest in ins if st == "runtime"]
    pkgs = apt_packages(next(rest for op, rest in runtime if op == "RUN" and "apt-get install" in rest))
    assert "libbpf1" in pkgs and "python3" in pkgs
    assert not {"clang", "llvm", "gcc", "make", "libbpf-dev"} & set(pkgs), "compilers belong to the build stage"
    assert ("COPY", "--from=build ${VENV} ${VENV}") in runtime
    assert ("USER", "10001") in runtime and ("ENTRYPOINT", '["kprobe"]') in runtime


def test_every_package_folder_is_copied():
    """A package added to pyproject.toml's folder map and not to the COPY lines breaks the image
    build at pip install; say which folder, before the slow build test does."""
    import tomllib

    folders = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    copied = {rest.split()[0].rstrip("/") for st, op, rest in instructions(CONTAINERFILE.read_text())
              if st == "build" and op == "COPY" and not rest.startswith("--from")}
    assert not folders - copied, f"not copied by deploy/Containerfile: {sorted(folders - copied)}"


def test_build_stage_steps_succeed_in_a_clean_directory(tmp_path):
    ins = [(op, rest) for st, op, rest in instructions(CONTAINERFILE.read_text()) if st == "build"]
    runs = [rest for op, rest in ins if op == "RUN"]
    apt = [r for r in runs if "apt-get install" in r]
    assert len(apt) == 1 and "rm -rf /var/lib/apt/lists/*" in apt[0]
    missing = [p for p in apt_packages(apt[0])
               if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if missing:
        msg = f"the Containerfile's build packages are not installed here: {' '.join(missing)} (apt-get install them)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)

    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": IMAGE_PATH, "LANG": "C.UTF-8"}
    for k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_FIND_LINKS",
              "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"):
        if k in os.environ:
            env[k] = os.environ[k]  # how this machine reaches PyPI
    workdir = tmp_path / "src"
    workdir.mkdir()
    timings = []
    started = time.time()
    for op, rest in ins:
        if op == "ARG":
            name, _, default = rest.partition("=")
            env[name] = str(tmp_path / "venv") if name == "VENV" else default
        elif op == "ENV":
            for kv in shlex.split(rest):
                k, _, v = kv.partition("=")
                env[k] = expand(v, env)
        elif op == "WORKDIR":
            assert rest == "/src", "the test maps WORKDIR /src to its temporary directory"
        elif op == "COPY":
            *srcs, dest = shlex.split(rest)
            for src in srcs:
                s, d = REPO / src, workdir / dest
                if s.is_dir():  # COPY dir/ dest/: the directory's contents
                    shutil.copytree(s, d, dirs_exist_ok=True)
                else:
                    assert dest.endswith("/"), rest
                    d.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(s, d / s.name)
        elif op == "RUN" and rest not in apt:
            t0 = time.monotonic()
            run_env = {**env, "PIP_NO_CACHE_DIR": "0"}  # the image keeps no pip cache; this machine may
            p = subprocess.run(["bash", "-euo", "pipefail", "-c", rest], cwd=workdir, env=run_env,
                               capture_output=True, text=True, timeout=1500)
            timings.append(f"{time.monotonic() - t0:6.1f} s  {rest[:90]}")
            assert p.returncode == 0, f"RUN {rest}\nexit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    print("\n".join(timings))

    venv = tmp_path / "venv"
    # built from scratch, not taken from whatever the copied tree held
    for built in [*(workdir / "probes" / "build").glob("*.bpf.o"), workdir / "replay" / "build" / "libkpreplay.so"]:
        assert built.stat().st_mtime >= started, built
    site = next(venv.glob("lib/python3*/site-packages/kprobe"))
    objs = sorted(p.name for p in (site / "probes" / "build").glob("*.bpf.o"))
    assert objs == sorted(p.name.replace(".bpf.c", ".bpf.o") for p in (REPO / "probes").glob("*.bpf.c"))
    assert (site / "replay" / "build" / "libkpreplay.so").is_file()
    # the virtualenv is what the runtime stage copies: Debian's python3 behind it, kprobe runs
    assert os.path.realpath(venv / "bin" / "python3").startswith("/usr/bin/python3")
    p = subprocess.run([str(venv / "bin" / "kprobe"), "dataflow", "ingest", "--help"], capture_output=True, text=True,
                       env={"PATH": f"{venv}/bin:{IMAGE_PATH}"}, timeout=120)
    assert p.returncode == 0 and "--clickhouse-http-port" in p.stdout, p.stderr
    p = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", "import kprobe.replay.worker, kprobe.replay.fastpath as f;"
                        " assert f.load_library() is not None"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
