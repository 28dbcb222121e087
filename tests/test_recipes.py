"""PromQL recipes: questions asked without PromQL ("top 5 pods by CPU in prod") are answered
by a named recipe the router fills in and shows in the plan; every default recipe is valid
PromQL (promtool); an install overrides, adds or switches off recipes in its settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsbot.config import Settings
from opsbot.intent.offline import OfflineRouter
from opsbot.inventory import Inventory
from opsbot.model import Actor, Request, Run, first_invocation
from opsbot.recipes import DEFAULT_RECIPES, Recipe, merged
from opsbot.skills.base import SkillRegistry, load_registry
from opsbot.skills.prometheus import Prometheus

REGISTRY = load_registry()
CATALOG = list(REGISTRY)


def request(text: str) -> Request:
    return Request(actor=Actor(id="shell:alice"), channel="test", text=text)


def renderings() -> list[str]:
    """Each default recipe in the shapes the router fills it in."""
    out = []
    for recipe in DEFAULT_RECIPES.values():
        out += [
            recipe.render(),
            recipe.render(namespace="shop", name="checkout"),
            recipe.render(namespace="shop", by="namespace", top=5, window="24h", quantile=0.95),
            recipe.render(name="checkout", top=3, lowest=True),
        ]
    return out


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_every_default_recipe_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "recipes",
                "rules": [
                    {"record": f"opsbot:recipe{i}", "expr": q} for i, q in enumerate(renderings())
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rendering() -> None:
    memory = DEFAULT_RECIPES["memory"]
    assert memory.render() == (
        'sum by (pod) (container_memory_working_set_bytes{container!="",image!=""})'
    )
    assert memory.render(namespace="shop", name="checkout", top=5) == (
        'topk(5, sum by (pod) (container_memory_working_set_bytes{container!="",image!="",'
        'namespace="shop",pod=~"checkout(-.*)?"}))'
    )
    errors = DEFAULT_RECIPES["error_ratio"].render(name="payments")
    assert 'code=~"5..",service="payments"' in errors and "{," not in errors
    assert "histogram_quantile(0.9," in DEFAULT_RECIPES["latency"].render(quantile=0.9)


@pytest.mark.parametrize(
    ("text", "skill", "recipe", "pieces"),
    [
        (
            "top 5 pods by CPU in prod",
            "prometheus.query",
            "cpu",
            ["topk(5, sum by (pod)", 'namespace="prod"', "container_cpu_usage_seconds_total"],
        ),
        (
            "memory of checkout",
            "prometheus.query",
            "memory",
            ['pod=~"checkout(-.*)?"', "container_memory_working_set_bytes"],
        ),
        (
            "how much memory is orders using in billing",
            "prometheus.query",
            "memory",
            ['namespace="billing"', 'pod=~"orders(-.*)?"'],
        ),
        (
            "which pods restart most",
            "prometheus.query",
            "restarts",
            ["topk(10,", "kube_pod_container_status_restarts_total", "[1h]"],
        ),
        (
            "which pods restarted the most in the last 24h in billing",
            "prometheus.query",
            "restarts",
            ["[24h]", 'namespace="billing"'],
        ),
        (
            "which namespaces use the most memory",
            "prometheus.query",
            "memory",
            ["sum by (namespace)"],
        ),
        (
            "top 3 containers by memory in billing",
            "prometheus.query",
            "memory",
            ["topk(3, sum by (container)"],
        ),
        (
            "cpu throttling in billing",
            "prometheus.query",
            "cpu_throttling",
            ["container_cpu_cfs_throttled_periods_total"],
        ),
        ("oom kills in billing", "prometheus.query", "oom_kills", ['reason="OOMKilled"']),
        (
            "disk usage in monitoring",
            "prometheus.query",
            "disk",
            ["kubelet_volume_stats_used_bytes"],
        ),
        (
            "graph the error rate of payments for 3h",
            "prometheus.range",
            "error_ratio",
            ['code=~"5.."', 'service="payments"'],
        ),
        (
            "p95 latency of checkout over the last 6h as a graph",
            "prometheus.range",
            "latency",
            ["histogram_quantile(0.95,", 'service="checkout"'],
        ),
        (
            "kubectl top pods -n billing",
            "prometheus.query",
            "top",
            ['"cpu_cores"', '"memory_bytes"', 'namespace="billing"'],
        ),
    ],
)
async def test_questions_without_promql_are_answered_by_a_recipe(
    text: str, skill: str, recipe: str, pieces: list[str]
) -> None:
    plan = await OfflineRouter().plan(request(text), CATALOG)
    invocation = first_invocation(plan)
    assert invocation is not None and invocation.skill == skill, plan
    assert invocation.rationale.startswith(f"recipe `{recipe}`:"), invocation.rationale
    for piece in pieces:
        assert piece in invocation.args["query"], invocation.args["query"]


@pytest.mark.parametrize(
    ("text", "skill"),
    [
        ("error rate of payments", "service.health"),  # the RED signals of one service
        ("p99 latency for checkout", "service.health"),
        ("restart count of the checkout pods in shop?", "k8s.pods"),  # the pods table has it
        (
            "graph rate(http_requests_total[5m]) over the last 6h",
            "prometheus.range",
        ),  # PromQL given
    ],
)
async def test_a_recipe_does_not_take_what_a_skill_answers(text: str, skill: str) -> None:
    invocation = first_invocation(await OfflineRouter().plan(request(text), CATALOG))
    assert invocation is not None and invocation.skill == skill
    assert not invocation.rationale.startswith("recipe")


def backend(**recipes: Any) -> Prometheus:
    return Prometheus(Prometheus.Config(url="http://prometheus:9090", recipes=recipes), Settings())  # type: ignore[arg-type]


async def test_recipes_are_configured_per_install() -> None:
    """The Prometheus backend's ``recipes`` (``prometheus_recipes`` in opsbot.yaml) replace a
    default by name, add new ones, and switch one off; the router reads them from the
    registry's backend."""
    prometheus = backend(
        memory={
            "summary": "memory in use (our exporter)",
            "words": ["memory", "ram"],
            "query": "sum by ({by}) (app_memory_bytes{{{selector}}})",
            "name_selector": 'app="{name}"',
        },
        queue_depth={
            "summary": "messages waiting in a queue",
            "words": ["queue depth", "backlog"],
            "query": "sum by ({by}) (queue_messages_ready{{{selector}}})",
            "by": "queue",
            "name_selector": 'queue="{name}"',
        },
        cpu={"summary": "-", "query": "-", "enabled": False},
    )
    assert set(prometheus.recipes()) == (set(DEFAULT_RECIPES) | {"queue_depth"}) - {"cpu"}
    registry = SkillRegistry([prometheus])
    router = OfflineRouter(Inventory(registry))
    catalog = list(registry)

    memory = first_invocation(await router.plan(request("memory of checkout"), catalog))
    assert (
        memory is not None
        and memory.args["query"] == 'sum by (pod) (app_memory_bytes{app="checkout"})'
    )
    queue = first_invocation(await router.plan(request("what is the backlog of orders"), catalog))
    assert (
        queue is not None
        and queue.args["query"] == 'sum by (queue) (queue_messages_ready{queue="orders"})'
    )
    assert queue.rationale == "recipe `queue_depth`: messages waiting in a queue"
    cpu = await router.plan(request("cpu of checkout"), catalog)
    assert not isinstance(cpu, Run)  # switched off: no recipe, no query to run


def test_the_settings_file_key() -> None:
    config = Prometheus.Config.model_validate(
        {"prometheus_recipes": {"x": {"summary": "x", "words": ["x"], "query": "up"}}}
    )
    assert isinstance(config.recipes["x"], Recipe)
    assert "x" in merged(config.recipes) and "memory" in merged(config.recipes)


def test_a_recipe_is_switched_off_by_enabled_false_alone() -> None:
    """``disk: {enabled: false}`` in opsbot.yaml (as README and the module doc say) switches
    the default off; it failed validation (summary and query were required). A recipe that
    is on still needs a query."""
    config = Prometheus.Config.model_validate({"prometheus_recipes": {"disk": {"enabled": False}}})
    assert "disk" not in merged(config.recipes) and "memory" in merged(config.recipes)
    with pytest.raises(ValueError, match="needs a query"):
        Prometheus.Config.model_validate({"prometheus_recipes": {"x": {"words": ["x"]}}})
