"""deploy/helm/kprobe, checked with the real tools.

deploy/k8s-tools.sh builds the pinned helm and kubectl-validate from the Go module proxy into
deploy/.cache/k8s-tools (once; later runs reuse them) and takes the OpenAPI v3 schemas of Kubernetes
1.26 and of the newest release from the k8s.io/kubernetes module source. Every values file of the
matrix (the defaults and deploy/helm/kprobe/ci/*-values.yaml) goes through `helm lint --strict` and
`helm template`, and every rendered manifest through kubectl-validate against both schema sets
(unknown fields, types, formats, names: the API server's own schema code). A broken copy of the
chart must fail that validation. The rest checks what the schemas cannot: least privilege of the
agent, the stack each mode installs, and that every container's args parse with kprobe's CLI.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kprobe.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kprobe"
TOOLS_SCRIPT = REPO / "deploy" / "k8s-tools.sh"
RELEASE, NAMESPACE = "kp", "monitoring"
FN = "kp-kprobe"  # the chart's full name for release "kp"
MATRIX = ["default"] + sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
DEFAULT_CAPS = ["BPF", "PERFMON", "SYS_RESOURCE"]


# ---------------------------------------------------------------- tools and rendering

@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    """Build (first run) or find (later runs) helm, kubectl-validate and the schemas."""
    t0 = time.monotonic()
    try:
        p = subprocess.run(["bash", str(TOOLS_SCRIPT), "--print-env"], capture_output=True, text=True,
                           timeout=1800)
    except subprocess.TimeoutExpired as e:
        _unavailable(f"deploy/k8s-tools.sh did not finish in {e.timeout} s")
    if p.returncode != 0:
        _unavailable(f"deploy/k8s-tools.sh exited {p.returncode}:\n{p.stderr.strip()[-3000:]}")
    env = dict(shlex.split(line)[0].split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    env["setup_s"] = f"{time.monotonic() - t0:.1f}"
    print(f"k8s tools ready in {env['setup_s']} s\n{p.stderr.strip()}")
    return env


def _unavailable(reason: str):
    """CI (CI=true) must have the tools: fail there; elsewhere skip, saying exactly what is missing."""
    if os.environ.get("CI"):
        pytest.fail(f"chart tools unavailable: {reason}", pytrace=False)
    pytest.skip(f"chart tools unavailable: {reason}")


def _values_args(name: str) -> list[str]:
    return [] if name == "default" else ["-f", str(CHART / "ci" / f"{name}-values.yaml")]


def helm(tools: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([tools["HELM"], *args], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HELM_CACHE_HOME": "/tmp/kprobe-helm-cache",
                            "HELM_CONFIG_HOME": "/tmp/kprobe-helm-config", "HELM_DATA_HOME": "/tmp/kprobe-helm-data"})
    if check and p.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} exited {p.returncode}:\n{p.stderr}", pytrace=False)
    return p


def template(tools: dict, *args: str, chart: Path = CHART, check: bool = True) -> subprocess.CompletedProcess:
    return helm(tools, "template", RELEASE, str(chart), "--namespace", NAMESPACE, *args, check=check)


def docs_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="session")
def rendered(tools) -> dict[str, str]:
    return {name: template(tools, *_values_args(name)).stdout for name in MATRIX}


def index(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def validate(tools: dict, manifest: Path, schemas: str) -> list[dict]:
    """kubectl-validate's verdict per document of ``manifest`` against one Kubernetes version's schemas."""
    p = subprocess.run([tools["KUBECTL_VALIDATE"], "--local-schemas", schemas, "--local-crds", tools["K8S_CRDS"],
                        "-o", "json", str(manifest)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "KUBECONFIG": "/nonexistent"})
    try:
        return json.loads(p.stdout)[str(manifest)]
    except (ValueError, KeyError):
        pytest.fail(f"kubectl-validate exited {p.returncode} without a verdict:\n{p.stdout}\n{p.stderr}", pytrace=False)


def _versions(tools: dict) -> list[str]:
    return tools["K8S_SCHEMAS"].split()


# ---------------------------------------------------------------- real tools over the matrix

@pytest.mark.parametrize("values", MATRIX)
def test_helm_lint_strict(tools, values):
    p = helm(tools, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *_values_args(values))
    assert "0 chart(s) failed" in p.stdout, p.stdout


@pytest.mark.parametrize("values", MATRIX)
def test_rendered_manifests_validate_against_kubernetes_openapi(tools, rendered, values, tmp_path):
    manifest = tmp_path / f"{values}.yaml"
    manifest.write_text(rendered[values])
    n_docs = len(docs_of(rendered[values]))
    versions = _versions(tools)
    assert len(versions) == 2 and "v1.26." in versions[0], versions
    for schemas in versions:
        verdicts = validate(tools, manifest, schemas)
        assert len(verdicts) == n_docs, f"{Path(schemas).name}: {len(verdicts)} verdicts for {n_docs} documents"
        bad = [v.get("message", v) for v in verdicts if v["status"] != "Success"]
        assert not bad, f"{values} against Kubernetes {Path(schemas).name}:\n" + "\n".join(map(str, bad))


@pytest.mark.parametrize("breakage", [
    # a misspelt field: helm renders it happily, the API server would reject the object
    ("agent-daemonset.yaml", "      hostPID: true", "      hostPid: true", "hostPid", ()),
    # a string where the schema wants an integer
    ("ingest-deployment.yaml", "              containerPort: {{ .Values.ingest.metricsPort }}",
     "              containerPort: \"{{ .Values.ingest.metricsPort }}\"", "containerPort", ()),
    # an object name the API server refuses (not a lowercase RFC 1123 name)
    ("causality-deployment.yaml", "  name: {{ $fn }}-causality\n  namespace", "  name: {{ $fn }}-Causality\n  namespace",
     "metadata.name", ()),
    # a custom resource: checked against the Prometheus operator's CRD schema
    ("servicemonitor.yaml", "      path: /metrics", "      paths: /metrics", "paths",
     ("--set", "serviceMonitor.enabled=true")),
], ids=["unknown-field", "wrong-type", "invalid-name", "crd-unknown-field"])
def test_a_broken_chart_copy_fails_validation(tools, tmp_path, breakage):
    file, good, bad, field, values = breakage
    chart = tmp_path / "kprobe"
    shutil.copytree(CHART, chart)
    path = chart / "templates" / file
    text = path.read_text()
    assert text.count(good) == 1, f"{file} no longer contains {good!r}: update this test"
    path.write_text(text.replace(good, bad))
    out = template(tools, *values, chart=chart, check=False)
    assert out.returncode == 0, "the broken copy must still render: only schema validation can catch it"
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(out.stdout)
    for schemas in _versions(tools):
        failures = [v for v in validate(tools, manifest, schemas) if v["status"] != "Success"]
        assert len(failures) == 1, f"{Path(schemas).name}: {failures}"
        assert field in json.dumps(failures[0]), failures[0]


def test_tool_versions(tools):
    assert Path(tools["HELM"]).parent.name == "helm-v4.3.2"
    out = helm(tools, "version", "--template", "{{ .Version }}").stdout
    assert out.startswith("v4.3"), out
    assert Path(tools["KUBECTL_VALIDATE"]).is_file()


def test_chart_refuses_kubernetes_older_than_1_26(tools):
    p = template(tools, "--kube-version", "1.25.16", check=False)
    assert p.returncode != 0 and "kubeVersion" in p.stderr, p.stderr
    template(tools, "--kube-version", "1.26.0")


# ---------------------------------------------------------------- least privilege

def _agent(docs: list[dict]) -> tuple[dict, dict]:
    ds = index(docs)[("DaemonSet", f"{FN}-agent")]
    spec = ds["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def test_default_agent_is_least_privilege(rendered):
    spec, c = _agent(docs_of(rendered["default"]))
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": DEFAULT_CAPS}
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["hostNetwork"] is False and spec["hostPID"] is True
    # the token authenticates the agent to its node's kubelet (pod identity); its only grant: get nodes/pods
    assert spec["automountServiceAccountToken"] is True
    # only what the agent reads or writes on the host: BTF, cgroups and tracefs read-only, its data directory
    host = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host == {"/sys/kernel/btf", "/sys/fs/cgroup", "/sys/kernel/tracing", "/var/lib/kprobe"}
    ro = {m["mountPath"] for m in c["volumeMounts"] if m.get("readOnly")}
    assert {"/sys/kernel/btf", "/sys/fs/cgroup", "/sys/kernel/tracing"} <= ro


@pytest.mark.parametrize("values", MATRIX)
def test_no_privileged_container_anywhere(rendered, values):
    assert "privileged: true" not in rendered[values]
    for d in docs_of(rendered[values]):
        pod = d.get("spec", {}).get("template", {}).get("spec") or (d["spec"] if d["kind"] == "Pod" else None)
        for c in (pod or {}).get("containers", []):
            assert c.get("securityContext", {}).get("privileged") in (None, False), (d["kind"], d["metadata"]["name"])


def test_features_add_only_their_capabilities(tools):
    _, c = _agent(docs_of(template(tools, "--set", "agent.features.processDetails=true").stdout))
    assert c["securityContext"]["capabilities"]["add"] == DEFAULT_CAPS + ["SYS_PTRACE"]
    spec, c = _agent(docs_of(template(tools, "-f", str(CHART / "ci" / "sysadmin-fallback-values.yaml")).stdout))
    sc = c["securityContext"]
    assert sc["capabilities"]["add"] == ["SYS_ADMIN", "SYS_RESOURCE"] and sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is True  # the API server rejects false beside CAP_SYS_ADMIN
    spec, _ = _agent(docs_of(template(tools, "--set", "agent.hostNetwork=true").stdout))
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"


def _kubelet_rbac(docs: list[dict]) -> list[dict]:
    roles = [d for d in docs if d["kind"] == "ClusterRole"]
    return [r for role in roles for r in role["rules"]]


def test_pod_identity_asks_the_kubelet_with_the_least_rbac(tools, rendered):
    docs = docs_of(rendered["default"])
    spec, c = _agent(docs)
    assert "--kubelet-url=https://$(NODE_IP):10250" in c["args"] and "--kubelet-insecure-tls" in c["args"]
    node_ip = next(e for e in c["env"] if e["name"] == "NODE_IP")
    assert node_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert _kubelet_rbac(docs) == [{"apiGroups": [""], "resources": ["nodes/pods"], "verbs": ["get"]}]
    binding = index(docs)[("ClusterRoleBinding", f"{FN}-agent-pods")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FN, "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == f"{FN}-agent-pods"
    # older kubelets: nodes/proxy only when asked for
    old = docs_of(template(tools, "--set", "agent.podIdentity.kubelet.nodesProxy=true").stdout)
    assert _kubelet_rbac(old)[0]["resources"] == ["nodes/pods", "nodes/proxy"]
    # the read-only port: no token, no RBAC; disabled: no kubelet at all
    ro = docs_of(template(tools, "--set", "agent.podIdentity.kubelet.scheme=http",
                          "--set", "agent.podIdentity.kubelet.port=10255").stdout)
    spec, c = _agent(ro)
    assert spec["automountServiceAccountToken"] is False and not _kubelet_rbac(ro)
    assert "--kubelet-url=http://$(NODE_IP):10255" in c["args"] and "--kubelet-insecure-tls" not in c["args"]
    off = docs_of(template(tools, "--set", "agent.podIdentity.kubelet.enabled=false").stdout)
    spec, c = _agent(off)
    assert spec["automountServiceAccountToken"] is False and not _kubelet_rbac(off)
    assert not any(a.startswith("--kubelet") for a in c["args"])


def test_other_pods_run_restricted(rendered):
    for d in docs_of(rendered["bundled"]):
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False


# ---------------------------------------------------------------- the stack per mode

def _args(d: dict) -> list[str]:
    return d["spec"]["template"]["spec"]["containers"][0]["args"]


def test_default_install_is_the_whole_stack(rendered):
    docs = docs_of(rendered["default"])
    kinds = index(docs)
    brokers = ",".join(f"{FN}-kafka-{i}.{FN}-kafka-headless.{NAMESPACE}.svc:9092" for i in range(3))
    agent = build_parser().parse_args(_args(kinds[("DaemonSet", f"{FN}-agent")]))
    assert agent.kafka == brokers and agent.metrics_port == 9463 and agent.otlp_host == "0.0.0.0"
    ingest = build_parser().parse_args(_args(kinds[("Deployment", f"{FN}-ingest")]))
    assert ingest.flow == "ingest" and ingest.brokers == brokers and ingest.clickhouse == f"{FN}-clickhouse:9000"
    assert str(ingest.state_dir) == "/state" and ingest.clickhouse_http_port == 8123
    causality = build_parser().parse_args(_args(kinds[("Deployment", f"{FN}-causality")]))
    assert causality.flow == "causality" and causality.neo4j == f"bolt://{FN}-neo4j:7687"
    for dep in ("ingest", "causality"):
        d = kinds[("Deployment", f"{FN}-{dep}")]
        assert d["spec"]["strategy"]["type"] == "Recreate"  # never two pods on one recovery store
        claim = d["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert ("PersistentVolumeClaim", claim) in kinds
    kafka = kinds[("StatefulSet", f"{FN}-kafka")]
    assert kafka["spec"]["replicas"] == 3 and kafka["spec"]["serviceName"] == f"{FN}-kafka-headless"
    for server in ("kafka", "clickhouse", "neo4j"):
        sts = kinds[("StatefulSet", f"{FN}-{server}")]
        assert sts["spec"]["volumeClaimTemplates"], server
        c = sts["spec"]["template"]["spec"]["containers"][0]
        assert c["readinessProbe"] and c["livenessProbe"], server
        assert ("PodDisruptionBudget", f"{FN}-{server}") in kinds
        assert ("NetworkPolicy", f"{FN}-{server}") in kinds
    # Neo4j credentials: a generated Secret, read by the server and by the causality flow
    secret = kinds[("Secret", f"{FN}-neo4j-auth")]
    assert "NEO4J_AUTH" in secret["data"]
    env = kinds[("Deployment", f"{FN}-causality")]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"] == {"name": f"{FN}-neo4j-auth", "key": "NEO4J_AUTH"}
    # the helm test hook
    test_pod = kinds[("Pod", f"{FN}-test-agent-attached")]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert ("ServiceMonitor", FN) not in kinds and ("Deployment", f"{FN}-replay") not in kinds


def test_every_selector_matches_its_pod_template(rendered):
    for values in MATRIX:
        for d in docs_of(rendered[values]):
            if d["kind"] in ("DaemonSet", "Deployment", "StatefulSet"):
                sel = d["spec"]["selector"]["matchLabels"]
                assert sel.items() <= d["spec"]["template"]["metadata"]["labels"].items(), d["metadata"]["name"]


def test_bundled_matrix_has_every_optional_part(rendered, monkeypatch, tmp_path):
    kinds = index(docs_of(rendered["bundled"]))
    sm = kinds[("ServiceMonitor", FN)]
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    replay = kinds[("Deployment", f"{FN}-replay")]
    from kprobe.replay import worker
    from kprobe.replay.worker_config import load_config

    # the worker's configuration comes from the chart's ConfigMap, mounted where its --config points
    mount = next(m for m in replay["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == "config")
    conf = kinds[("ConfigMap", f"{FN}-replay")]["data"]
    args = [a.replace(mount["mountPath"], str(tmp_path)) for a in _args(replay)]
    for name, text in conf.items():
        (tmp_path / name).write_text(text)
    cfg = load_config(tmp_path / "replay-worker.json")
    assert cfg.binaries == ["/var/lib/kprobe/bin/settlement-svc"] and cfg.identity()[0] == 10001 and not cfg.isolate
    seen = []
    monkeypatch.setattr(worker, "run", lambda *a, **kw: seen.append((*a, kw)))
    assert worker.main(args) == 0
    assert seen[0][-1]["config"].binaries == cfg.binaries
    assert seen[0][0] == build_parser().parse_args(_args(kinds[("DaemonSet", f"{FN}-agent")])).kafka
    ingest = build_parser().parse_args(_args(kinds[("Deployment", f"{FN}-ingest")]))
    assert (ingest.workers, ingest.processes) == (4, 2)
    _, c = _agent(list(kinds.values()))
    assert "SYS_PTRACE" in c["securityContext"]["capabilities"]["add"]


def test_external_endpoints(rendered):
    kinds = index(docs_of(rendered["external"]))
    assert not [k for k in kinds if k[0] in ("StatefulSet", "Secret", "PodDisruptionBudget", "NetworkPolicy")]
    agent = build_parser().parse_args(_args(kinds[("DaemonSet", f"{FN}-agent")]))
    assert agent.kafka == "kafka-0.kafka.kafka.svc:9092,kafka-1.kafka.kafka.svc:9092" and agent.no_otlp
    causality = kinds[("Deployment", f"{FN}-causality")]
    args = build_parser().parse_args(_args(causality))
    assert args.clickhouse == "clickhouse.clickhouse.svc:9000" and args.neo4j == "bolt://neo4j.neo4j.svc:7687"
    env = causality["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == "neo4j-credentials"
    assert causality["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.internal/kprobe:0.1.0"


def test_embedded_mode_is_agents_only(rendered):
    kinds = index(docs_of(rendered["embedded"]))
    assert {k[0] for k in kinds} <= {"DaemonSet", "Service", "ServiceAccount", "NetworkPolicy", "Pod",
                                     "ClusterRole", "ClusterRoleBinding"}  # the agent reads its kubelet's /pods
    args = build_parser().parse_args(_args(kinds[("DaemonSet", f"{FN}-agent")]))
    assert args.kafka is None and args.watch_comm == ["settlement-svc", "payment-handler"]
    assert args.retention == 7200 and args.otlp_grpc_port == 4317


def test_missing_external_endpoint_is_an_error(tools):
    p = template(tools, "--set", "kafka.bundled=false", check=False)
    assert p.returncode != 0 and "kafka.brokers is required" in p.stderr


@pytest.mark.parametrize("setting, complaint", [
    ("agent.privileged=true", "additional properties 'privileged' not allowed"),
    ("agent.capabilites={BPF}", "additional properties 'capabilites' not allowed"),       # a typo
    ("agent.capabilities={BPF,PERFMON,NET_ADMIN}", "/agent/capabilities/2"),              # not a kprobe need
    ("agent.capabilities={SYS_ADMIN}", "/agent/capabilities/0"),                          # sysAdminFallback only
    ("agent.seccompProfile=Localhost", "/agent/seccompProfile"),
    ("mode=cluster", "/mode"),
    ("kafka.clusterId=short", "/kafka/clusterId"),
])
def test_values_schema_refuses_privileges_and_typos(tools, setting, complaint):
    """values.schema.json: helm lint, template and install refuse these values."""
    for cmd in (["lint", "--strict", str(CHART)], ["template", RELEASE, str(CHART)]):
        p = helm(tools, *cmd, "--set", setting, check=False)
        assert p.returncode != 0 and complaint in p.stdout + p.stderr, (cmd, p.stdout, p.stderr)


@pytest.mark.kernel
def test_helm_test_hook_reads_a_running_agents_attach_status(tools, tmp_path, probes_built):
    """The `helm test` pod's script, run here against a real `kprobe record` on this kernel."""
    from tests.conftest import is_root

    if not is_root():
        pytest.skip("the agent needs root (CI runs as root)")
    data = tmp_path / "data"
    pod = index(docs_of(template(tools, "--set", f"agent.dataDir={data}").stdout))[("Pod", f"{FN}-test-agent-attached")]
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["python", "-c"] and c["volumeMounts"][0]["mountPath"] == str(data)
    venv_bin = str(Path(sys.executable).parent)
    agent = subprocess.Popen([sys.executable, "-m", "kprobe", "record", "--data", str(data), "--no-otlp",
                              "--duration", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        p = subprocess.run([sys.executable, "-c", c["args"][0]], capture_output=True, text=True, timeout=90,
                           env={**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"})
    finally:
        agent.terminate()
        agent.wait(timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines and all(line.startswith("attached ") for line in lines), p.stdout
