"""The kubectl grammar: a request typed as a kubectl command maps to the skill that does the
same, with its arguments; kubectl's options work inside English requests too; a command opsbot
does not run is refused with what it can do instead, and nothing is planned."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from opsbot.intent import extract as ex
from opsbot.intent import kubectl
from opsbot.intent.offline import OfflineRouter
from opsbot.inventory import Inventory
from opsbot.model import Actor, Answer, Clarify, Plan, Request, first_invocation
from opsbot.skills.base import load_registry

REGISTRY = load_registry()
CATALOG = list(REGISTRY)


def request(text: str) -> Request:
    return Request(actor=Actor(id="shell:alice"), channel="test", text=text)


async def plan(text: str, router: OfflineRouter | None = None) -> Plan:
    return await (router or OfflineRouter()).plan(request(text), CATALOG)


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        # kubectl's own verbs, kinds and short names, options before or after
        (
            "kubectl get pods -n staging -l app=cart",
            "k8s.pods",
            {"namespace": "staging", "selector": "app=cart"},
        ),
        ("k get po -n shop -o wide", "k8s.pods", {"namespace": "shop"}),
        ("kubectl -n shop get pods", "k8s.pods", {"namespace": "shop"}),
        ("kubectl get events --namespace=shop", "k8s.events", {"namespace": "shop"}),
        (
            "kubectl describe sts/redis -n shop",
            "k8s.describe",
            {"kind": "statefulset", "name": "redis", "namespace": "shop"},
        ),
        (
            "kubectl describe deployment orders --namespace billing",
            "k8s.describe",
            {"kind": "deployment", "name": "orders", "namespace": "billing"},
        ),
        (
            "kubectl get deploy orders -n billing -o yaml",
            "k8s.describe",
            {"kind": "deployment", "name": "orders"},
        ),
        ("kubectl describe node worker-1", "k8s.describe", {"kind": "node", "name": "worker-1"}),
        (
            "kubectl logs deploy/orders -n billing --tail=20 --since=10m -c app",
            "k8s.logs",
            {
                "name": "orders",
                "namespace": "billing",
                "tail": 20,
                "since": "10m",
                "container": "app",
            },
        ),
        (
            "kubectl logs -l app=orders -n billing",
            "k8s.logs",
            {"name": "orders", "namespace": "billing"},
        ),
        (
            "kubectl logs orders-5c9f7d8b6-q2w3e -n billing --previous",
            "k8s.logs",
            {"name": "orders-5c9f7d8b6-q2w3e"},
        ),
        (
            "kubectl rollout status deploy/orders -n billing",
            "k8s.rollout.status",
            {"name": "orders", "namespace": "billing"},
        ),
        (
            "kubectl rollout history deployment orders -n billing",
            "k8s.rollout.history",
            {"name": "orders", "namespace": "billing"},
        ),
        (
            "kubectl rollout restart deploy orders -n billing",
            "k8s.restart",
            {"name": "orders", "namespace": "billing"},
        ),
        (
            "kubectl -n billing rollout undo deploy/orders",
            "k8s.rollback",
            {"name": "orders", "namespace": "billing"},
        ),
        (
            "kubectl rollout undo deploy/orders -n billing --to-revision 7",
            "k8s.rollback",
            {"name": "orders", "revision": 7},
        ),
        (
            "kubectl scale --replicas=0 deployment/orders -n billing",
            "k8s.scale",
            {"name": "orders", "namespace": "billing", "replicas": 0},
        ),
        ("oc scale deploy orders --replicas 2 -n billing", "k8s.scale", {"replicas": 2}),
        # a kubectl verb without "kubectl", when what follows is kubectl's syntax
        (
            "rollout undo deploy/orders -n billing",
            "k8s.rollback",
            {"name": "orders", "namespace": "billing"},
        ),
        ("describe sts/redis -n billing", "k8s.describe", {"kind": "statefulset", "name": "redis"}),
        ("scale deployment/orders --replicas 4 --namespace billing", "k8s.scale", {"replicas": 4}),
        # kubectl's options inside an English request
        (
            "restart deploy/orders -n billing",
            "k8s.restart",
            {"name": "orders", "namespace": "billing"},
        ),
        (
            "logs for orders since 2h -n billing",
            "k8s.logs",
            {"name": "orders", "namespace": "billing", "since": "2h"},
        ),
        (
            "roll orders back --to-revision=3 in billing",
            "k8s.rollback",
            {"name": "orders", "revision": 3},
        ),
    ],
)
async def test_kubectl_forms(text: str, skill: str, args: dict[str, Any]) -> None:
    invocation = first_invocation(await plan(text))
    assert invocation is not None and invocation.skill == skill, text
    assert {k: invocation.args.get(k) for k in args} == args, invocation.args


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("kubectl exec -it orders-5c9f7d8b6-q2w3e -n billing -- sh", "I don't open shells"),
        ("kubectl delete pod orders-5c9f7d8b6-q2w3e -n billing", "I don't delete"),
        ("kubectl apply -f deploy.yaml", "I don't apply"),
        ("kubectl get secret db-creds -n billing -o yaml", "I never show secrets"),
        ("kubectl describe secret db-creds -n billing", "I never show secrets"),
        ("kubectl edit deploy/orders -n billing", "I don't edit"),
        ("kubectl port-forward svc/orders 8080:80 -n billing", "I don't forward ports"),
        ("kubectl drain worker-2", "I don't drain"),
        ("delete pod orders-5c9f7d8b6-q2w3e -n billing", "I don't delete"),
        ("kubectl rollout restart cronjob/report -n billing", "not cronjobs"),
        ("kubectl scale ds/node-exporter --replicas=2 -n monitoring", "no replicas to scale"),
    ],
)
async def test_unsupported_commands_are_refused_with_what_it_can_do(text: str, why: str) -> None:
    answer = await plan(text)
    assert isinstance(answer, Answer) and answer.about is None and not answer.unmatched
    assert why in answer.text and "nothing was run" in answer.text
    assert "`get pods`" in answer.text and "`rollout restart`" in answer.text  # what it can do
    assert len(answer.text) < 400  # brief


async def test_a_command_is_grounded_and_completed_from_the_inventory() -> None:
    inventory = Inventory()
    inventory.add("namespace", ["shop", "staging"])
    inventory.add("deployment", ["checkout", "payments", "cart-api", "cart-web"])
    inventory.add("deployment/shop", ["checkout", "payments", "cart-api", "cart-web"])
    router = OfflineRouter(inventory)
    typo = first_invocation(await plan("kubectl describe deploy chekout -n shop", router))
    assert typo is not None and typo.args["name"] == "checkout"
    homeless = first_invocation(await plan("kubectl rollout restart deploy/payments", router))
    assert homeless is not None and homeless.args == {"name": "payments", "namespace": "shop"}
    ambiguous = await plan("kubectl rollout restart deploy/cart -n shop", router)
    assert isinstance(ambiguous, Clarify) and ambiguous.missing == ["name"]
    assert [c.args["name"] for c in ambiguous.choices] == ["cart-api", "cart-web"]


async def test_a_write_command_is_planned_only_in_the_imperative() -> None:
    """kubectl's syntax goes through the same write-mood check as any request: quoted or
    asked about, a write command plans nothing."""
    for text in (
        "what does `kubectl rollout undo deploy/cart -n shop` do?",
        "should I kubectl rollout restart deploy/cart -n shop?",
        "don't kubectl scale deploy/cart --replicas=0 -n shop",
        "kubectl rollout restart deploy/cart -n shop?",
    ):
        result = await plan(text)
        assert first_invocation(result) is None or first_invocation(result).skill not in (  # type: ignore[union-attr]
            "k8s.restart",
            "k8s.rollback",
            "k8s.scale",
        ), text


async def test_a_command_the_actor_may_not_use_is_unmatched_and_explained() -> None:
    reads = [s for s in CATALOG if s.name != "k8s.restart"]
    router = OfflineRouter()
    answer = await router.plan(request("kubectl rollout restart deploy/orders -n billing"), reads)
    assert isinstance(answer, Answer) and answer.unmatched
    withheld = [s for s in CATALOG if s.name == "k8s.restart"]
    assert (
        await router.explain(request("kubectl rollout restart deploy/orders -n billing"), withheld)
        == "k8s.restart"
    )


def test_english_with_a_kubectl_verb_is_not_a_command() -> None:
    for text in (
        "delete the silence for checkout",
        "describe the checkout deployment in shop",
        "logs of payments in shop",
        "top 5 pods by CPU in prod",
        "get me the pods of checkout",
        "logs for payments since 2h -n shop",
    ):
        assert kubectl.command(text) is None, text


def test_options_are_read_out_of_any_request() -> None:
    found = kubectl.options("restart deployment/cart -n shop now --replicas=3 --to-revision 4")
    assert found.values == {"namespace": "shop", "replicas": "3", "to-revision": "4"}
    assert found.refs == [("deployment", "cart")]
    assert found.rest == "restart deployment cart now"
    parsed = ex.parse("scale deploy/cart --replicas=3 -nshop")
    assert parsed.refs == [("deployment", "cart")] and parsed.flags["namespace"] == "shop"
    assert "=" not in parsed.rest  # an option is no label matcher


def test_a_workload_of_another_kind_is_passed_on_as_its_kind() -> None:
    """``sts/x`` and ``ds/x`` reach the skill as its ``kind``; a skill that takes no such
    kind refuses them (see test_a_kind_the_skill_does_not_take_is_refused)."""
    for text, skill, kind in (
        ("kubectl rollout restart sts/elasticsearch-data -n logging", "k8s.restart", "statefulset"),
        ("kubectl --namespace=data scale --replicas=5 sts/zookeeper", "k8s.scale", "statefulset"),
        (
            "kubectl rollout status ds/node-exporter -n monitoring",
            "k8s.rollout.status",
            "daemonset",
        ),
        ("kubectl rollout undo deploy/cart -n shop", "k8s.rollback", None),
    ):
        cmd = kubectl.command(text)
        assert cmd is not None
        mapped = kubectl.translate(cmd)
        assert isinstance(mapped, kubectl.Mapped) and mapped.skill == skill, text
        assert mapped.args.get("kind") == kind, text


async def test_a_kind_the_skill_does_not_take_is_refused() -> None:
    class Deployments(BaseModel):
        name: str
        namespace: str | None = None

    restart = type(next(s for s in CATALOG if s.name == "k8s.restart"))
    narrow = type("DeploymentsOnly", (restart,), {"Args": Deployments})()
    answer = await OfflineRouter().plan(
        request("kubectl rollout restart sts/redis -n billing"), [narrow]
    )
    assert isinstance(answer, Answer) and "deployments only, not statefulsets" in answer.text
    assert "nothing was run" in answer.text
