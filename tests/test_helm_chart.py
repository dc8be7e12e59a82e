"""deploy/helm/kprobe renders to valid Kubernetes YAML whose container args the CLI accepts.

`helm` is not installed here, so a tiny renderer covers exactly the template constructs the chart
uses (``.Values``/``.Release`` lookups, ``| quote``, ``toYaml … | nindent n``, ``if``/``end``);
a template using anything else fails this test, which keeps the chart simple enough to check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kprobe.cli import build_parser

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "kprobe"
_EXPR = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}")


def _lookup(ctx: dict, path: str):
    node = ctx
    for part in path.lstrip(".").split("."):
        node = node[part]
    return node


def _eval(ctx: dict, expr: str) -> str:
    if m := re.fullmatch(r"toYaml (\S+) \| nindent (\d+)", expr):
        text = yaml.safe_dump(_lookup(ctx, m.group(1)), default_flow_style=False).rstrip("\n")
        pad = " " * int(m.group(2))
        return "\n" + "\n".join(pad + line for line in text.splitlines())
    if m := re.fullmatch(r"(\.\S+) \| quote", expr):
        return '"' + str(_lookup(ctx, m.group(1))) + '"'
    if re.fullmatch(r"\.\S+", expr):
        return str(_lookup(ctx, expr))
    raise AssertionError(f"template construct not supported by the chart test: {{{{ {expr} }}}}")


def render(text: str, ctx: dict) -> str:
    out: list[str] = []
    keep = [True]
    pos = 0
    for m in _EXPR.finditer(text):
        chunk = text[pos:m.start()]
        if m.group(1):  # {{- trims whitespace before
            chunk = chunk.rstrip()
        if all(keep):
            out.append(chunk)
        expr = m.group(2)
        pos = m.end()
        if expr.startswith("if "):
            keep.append(bool(_lookup(ctx, expr[3:].strip())))
        elif expr == "end":
            keep.pop()
        elif all(keep):
            out.append(_eval(ctx, expr))
        if m.group(3):
            pos += len(text[pos:]) - len(text[pos:].lstrip())
    out.append(text[pos:])
    return "".join(out)


def _docs(values_override: dict | None = None) -> list[dict]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for k, v in (values_override or {}).items():
        values[k].update(v)
    ctx = {"Values": values, "Release": {"Name": "kp"}, "Chart": yaml.safe_load((CHART / "Chart.yaml").read_text())}
    docs = []
    for t in sorted((CHART / "templates").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(render(t.read_text(), ctx)) if d]
    return docs


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "kprobe" and chart["version"]


def test_agent_daemonset_is_privileged_hostpid_with_btf_and_valid_args():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _docs()}
    ds = docs[("DaemonSet", "kp-agent")]
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    c = spec["containers"][0]
    assert c["securityContext"]["privileged"] is True
    assert any(m["mountPath"] == "/sys/kernel/btf" for m in c["volumeMounts"])
    # memcg ids from the probes are host cgroup inodes: the host's tree is mounted over the pod's view
    cg = next(m for m in c["volumeMounts"] if m["mountPath"] == "/sys/fs/cgroup")
    vol = next(v for v in spec["volumes"] if v["name"] == cg["name"])
    assert vol["hostPath"]["path"] == "/sys/fs/cgroup" and cg["readOnly"] is True
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    args = build_parser().parse_args(c["args"])
    assert args.kafka == "kafka-0.kafka:9092,kafka-1.kafka:9092,kafka-2.kafka:9092" and args.metrics_port == 9463


def test_ingest_deployment_args_parse_and_state_is_persistent():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _docs()}
    dep = docs[("Deployment", "kp-ingest")]
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(c["args"])
    assert args.flow == "ingest" and args.clickhouse == "clickhouse.clickhouse:9000" and str(args.state_dir) == "/state"
    assert args.clickhouse_http_port == 8123
    claim = dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in docs


@pytest.mark.parametrize("enabled", [False, True])
def test_causality_deployment_is_optional(enabled):
    names = {d["metadata"]["name"] for d in _docs({"causality": {"enabled": enabled}})}
    assert ("kp-causality" in names) is enabled
