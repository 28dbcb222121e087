"""One argument pipeline for both planners: each argument's meaning is declared once on the
skill's ``Args``; the offline router extracts by meaning (not by field name), and both the
router and the LLM planner ground names through the same module, so a near miss, a pod of a
known deployment, two close names and an unknown name come out the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, Field

from opsbot.intent import arguments
from opsbot.intent import extract as ex
from opsbot.intent.llm import LLMPlanner
from opsbot.intent.offline import OfflineRouter
from opsbot.inventory import Inventory
from opsbot.meaning import Count, Grounded, Lasting, ObjectKind, Since
from opsbot.model import Actor, Answer, Clarify, Request, first_invocation
from opsbot.policy import Policy
from opsbot.services import Services, build_services
from opsbot.skills.base import Skill, load_registry
from tests.conftest import make_settings
from tests.fakes.openai_server import FakeOpenAI, call, reply

REGISTRY = load_registry()
CATALOG = list(REGISTRY)
BUILTIN = ("prometheus", "alertmanager", "loki", "kubernetes", "meta")


def request(text: str) -> Request:
    return Request(actor=Actor(id="shell:alice"), channel="test", text=text)


def test_every_builtin_argument_declares_its_meaning() -> None:
    """A field the router reads is declared on its Args (not read by its name), except the
    ones no request gives (a Prometheus evaluation time, a chart's step, the audit log's own
    filters, which its route_args reads)."""
    not_read = {
        ("prometheus.query", "time"),
        ("prometheus.range", "step"),
        ("service.health", "chart"),  # set by the triage, which draws its own chart
        ("logs.query", "direction"),
        ("help", "topic"),
        ("alerts.unsilence", "id"),
    }
    for skill in CATALOG:
        if skill.Args.__module__.split(".")[2] not in BUILTIN:
            continue
        declared = arguments.declared(skill.Args)
        for name in skill.Args.model_fields:
            if skill.name == "audit.search" and name != "since":
                continue
            assert name in declared or (skill.name, name) in not_read, (skill.name, name)


class ToyArgs(BaseModel):
    pods: Annotated[int, Count("replicas")]
    target: Annotated[str, Grounded("deployment")] = Field(pattern=r"^[a-z0-9-]+$")
    ns: Annotated[str, Grounded("namespace")]
    window: Annotated[str, Since()] = "1h"
    hold: Annotated[str | None, Lasting()] = None


class Toy(Skill[ToyArgs]):
    name = "toy.resize"
    summary = "Resize"
    Args = ToyArgs
    keywords: ClassVar[dict[str, float]] = {"resize": 3.0}


async def test_arguments_are_read_by_meaning_not_by_name() -> None:
    plan = await OfflineRouter().plan(
        request("resize checkout to three in shop over the last 2h for 30m"), [Toy()]
    )
    invocation = first_invocation(plan)
    assert invocation is not None and invocation.args == {
        "pods": 3,
        "target": "checkout",
        "ns": "shop",
        "window": "2h",
        "hold": "30m",
    }


@pytest.mark.parametrize(
    ("text", "unit", "value"),
    [
        ("scale it to 5", "replicas", 5),
        ("take it down to zero", "replicas", 0),
        ("three replicas please", "replicas", 3),
        ("scale --replicas=4", "replicas", 4),
        ("roll back to revision 12", "revision", 12),
        ("undo --to-revision=4", "revision", 4),
        ("last 200 lines", "lines", 200),
        ("tail 50", "lines", 50),
        ("logs --tail=20", "lines", 20),
        ("top 5 errors", "top", 5),
        ("scale it for 5 minutes", "replicas", None),  # a duration is no count
    ],
)
def test_counts_know_their_unit(text: str, unit: str, value: int | None) -> None:
    assert arguments.count(ex.parse(text), unit) == value


def inventory() -> Inventory:
    names = Inventory()
    names.add("namespace", ["shop", "staging"])
    names.add("deployment", ["checkout", "payments", "cart-api", "cart-web"])
    names.add("deployment/shop", ["checkout", "payments", "cart-api", "cart-web"])
    names.add("service", ["checkout", "payments"])
    names.add("alertname", ["HighErrorRate"])
    return names


async def test_grounding_by_declared_kind() -> None:
    snapshot = await inventory().snapshot()
    skill = REGISTRY.get("k8s.logs")
    assert skill is not None
    grounded, problems = arguments.ground(skill, {"name": "chekout", "namespace": "shop"}, snapshot)
    assert grounded["name"] == "checkout" and problems == []
    pod, problems = arguments.ground(
        skill, {"name": "checkout-7d9f8b6c5-x2k4p", "namespace": "shop"}, snapshot
    )
    assert (
        pod["name"] == "checkout-7d9f8b6c5-x2k4p" and problems == []
    )  # a pod of a known deployment
    _, problems = arguments.ground(skill, {"name": "cart", "namespace": "shop"}, snapshot)
    assert problems == ["deployment 'cart' is ambiguous: which one: cart-api, cart-web?"]
    _, problems = arguments.ground(skill, {"name": "nginx", "namespace": "shop"}, snapshot)
    assert problems and problems[0].startswith("there is no deployment 'nginx' (known:")
    describe = REGISTRY.get("k8s.describe")
    assert describe is not None  # a node is not grounded against deployments
    assert arguments.ground(describe, {"kind": "node", "name": "worker-1"}, snapshot)[1] == []


@pytest.fixture
async def services(tmp_path: Path, policy: Policy) -> AsyncIterator[tuple[Services, FakeOpenAI]]:
    async with FakeOpenAI() as model:
        settings = make_settings(
            f"sqlite+aiosqlite:///{tmp_path / 'args.db'}",
            tmp_path,
            openai_base_url=model.base_url,
            openai_api_key="test-key",
            llm_model="gpt-4o-mini",
            llm_timeout=2.0,
            llm_retries=0,
        )
        svc = await build_services(settings, policy=policy)
        svc.inventory = inventory()
        yield svc, model
        await svc.close()


async def test_both_planners_ground_the_same_way(services: tuple[Services, FakeOpenAI]) -> None:
    """The same request, planned by the offline router and by a (scripted) model calling the
    tool with the name as typed: the same invocation comes out."""
    svc, model = services
    router = OfflineRouter(svc.inventory)
    llm = LLMPlanner(svc, fallback=router)
    cases: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        (
            "restart chekout in shop",
            "k8s.restart",
            {"name": "chekout", "namespace": "shop"},
            {"name": "checkout"},
        ),
        (
            "how is paymnts doing in shop",
            "service.health",
            {"service": "paymnts", "namespace": "shop"},
            {"service": "payments"},
        ),
        (
            "tail the logs of checkout-7d9f8b6c5-x2k4p in shop",
            "k8s.logs",
            {"name": "checkout-7d9f8b6c5-x2k4p", "namespace": "shop"},
            {"name": "checkout-7d9f8b6c5-x2k4p"},
        ),
        (
            "kubectl describe deploy paymets -n shop",
            "k8s.describe",
            {"kind": "deployment", "name": "paymets", "namespace": "shop"},
            {"name": "payments"},
        ),
    ]
    for text, skill, typed, want in cases:
        model.script(reply(None, call(skill.replace(".", "__"), typed)))
        by_model = first_invocation(await llm.plan(request(text), CATALOG))
        by_router = first_invocation(await router.plan(request(text), CATALOG))
        assert by_model is not None and by_router is not None, text
        assert (by_model.skill, by_router.skill) == (skill, skill), text
        for key, value in want.items():
            assert by_model.args[key] == by_router.args[key] == value, (text, by_model, by_router)

    # two close names: the router asks which; the model is told which ones there are
    asked = await router.plan(request("restart cart in shop"), CATALOG)
    assert (
        isinstance(asked, Clarify)
        and asked.question == "Which one do you mean: cart-api, cart-web?"
    )
    model.script(
        reply(None, call("k8s__restart", {"name": "cart", "namespace": "shop"})),
        reply("Which cart do you mean?"),
    )
    told = await llm.plan(request("restart cart in shop"), CATALOG)
    assert isinstance(told, Answer)
    said = [m["content"] for m in model.completions[-1]["messages"] if m["role"] == "tool"]
    assert "which one: cart-api, cart-web?" in said[-1]


class _WorkloadArgs(BaseModel):
    kind: Annotated[Literal["deployment", "statefulset"], ObjectKind()] = "deployment"
    name: Annotated[str, Grounded("deployment", kind_field="kind")]
    namespace: Annotated[str | None, Grounded("namespace")] = None


class _Workload(Skill[_WorkloadArgs, Any]):
    name = "test.workload"
    summary = "a workload"
    Args = _WorkloadArgs


def test_a_kind_is_read_only_among_the_kinds_the_field_lists() -> None:
    """'the tracking pixel service ... scale pixel-tracker': 'service' is no kind this skill
    acts on, so it is not read as one (the default stands); a statefulset is."""
    assert arguments.allowed(_WorkloadArgs, "kind") == ("deployment", "statefulset")
    assert arguments.allowed(_WorkloadArgs, "name") is None

    def kind(text: str) -> object:
        found = arguments.extract(_Workload(), arguments.Reading(ex.parse(text)))
        assert isinstance(found, arguments.Extracted)
        return found.args.get("kind")

    assert kind("the pixel service fell over, scale pixel-tracker to 3") == "deployment"
    assert kind("restart the kafka statefulset in data") == "statefulset"


def _workloads() -> Inventory:
    """shop has the deployment checkout, the statefulset redis, the daemonset log-agent, and
    a deployment and a statefulset both called search; staging has a deployment redis."""
    names = Inventory()
    names.add("namespace", ["shop", "staging"])
    names.add("deployment", ["checkout", "search", "redis", "redis-exporter"])
    names.add("deployment/shop", ["checkout", "search", "redis-exporter"])
    names.add("deployment/staging", ["redis"])
    names.add("statefulset", ["redis", "search"])
    names.add("statefulset/shop", ["redis", "search"])
    names.add("daemonset", ["log-agent"])
    names.add("daemonset/shop", ["log-agent"])
    return names


@pytest.fixture
async def workload_services(
    tmp_path: Path, policy: Policy
) -> AsyncIterator[tuple[Services, FakeOpenAI]]:
    async with FakeOpenAI() as model:
        settings = make_settings(
            f"sqlite+aiosqlite:///{tmp_path / 'kinds.db'}",
            tmp_path,
            openai_base_url=model.base_url,
            openai_api_key="test-key",
            llm_model="gpt-4o-mini",
            llm_timeout=2.0,
            llm_retries=0,
        )
        svc = await build_services(settings, policy=policy)
        svc.inventory = _workloads()
        yield svc, model
        await svc.close()


async def test_a_workload_named_without_a_kind_is_the_kind_the_inventory_has_it_as(
    workload_services: tuple[Services, FakeOpenAI],
) -> None:
    """'restart redis in shop': redis is a statefulset there (and no deployment of shop),
    so both planners restart the statefulset, not a deployment the dry run would refuse; a
    deployment of the name wins (search), the namespace decides (redis in staging is a
    deployment), a kind said stands, and a daemonset is found the same way."""
    svc, model = workload_services
    router = OfflineRouter(svc.inventory)
    llm = LLMPlanner(svc, fallback=router)
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("restart redis in shop", "k8s.restart", {"name": "redis", "namespace": "shop"}, "statefulset"),
        ("scale redis in shop to 3", "k8s.scale", {"name": "redis", "namespace": "shop", "replicas": 3}, "statefulset"),
        ("restart log-agent in shop", "k8s.restart", {"name": "log-agent", "namespace": "shop"}, "daemonset"),
        ("restart search in shop", "k8s.restart", {"name": "search", "namespace": "shop"}, "deployment"),
        ("restart redis in staging", "k8s.restart", {"name": "redis", "namespace": "staging"}, "deployment"),
        (
            "restart the redis deployment in shop",
            "k8s.restart",
            {"name": "redis", "namespace": "shop", "kind": "deployment"},
            "deployment",
        ),
    ]  # fmt: skip
    for text, skill, typed, kind in cases:
        model.script(reply(None, call(skill.replace(".", "__"), typed)))
        by_model = first_invocation(await llm.plan(request(text), CATALOG))
        by_router = first_invocation(await router.plan(request(text), CATALOG))
        assert by_model is not None and by_router is not None, text
        assert (by_model.skill, by_router.skill) == (skill, skill), text
        assert by_model.args["name"] == by_router.args["name"] == typed["name"], text
        assert by_model.args.get("kind", "deployment") == kind, (text, by_model.args)
        assert by_router.args.get("kind", "deployment") == kind, (text, by_router.args)


def test_kind_holding_needs_one_kind_and_a_listed_default() -> None:
    snapshot = {
        "statefulset": {"redis", "kafka"},
        "daemonset": {"kafka"},
        "namespace": {"shop"},
    }
    meaning = Grounded("deployment", kind_field="kind")
    model = REGISTRY.get("k8s.restart")
    assert model is not None
    # no deployment listed: the inventory cannot tell that none is called redis
    assert arguments.kind_holding(model.Args, meaning, "redis", {}, snapshot) is None
    snapshot["deployment"] = {"checkout"}
    assert arguments.kind_holding(model.Args, meaning, "redis", {}, snapshot) == "statefulset"
    assert arguments.kind_holding(model.Args, meaning, "kafka", {}, snapshot) is None  # two
    assert arguments.kind_holding(model.Args, meaning, "checkout", {}, snapshot) is None
