"""Policy loading (with file:line errors) and decisions, per DESIGN.md's contract."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from opsbot.model import Actor
from opsbot.policy import Allow, Deny, NeedsApproval, Policy, PolicyError

ALICE, BOB, EVE = Actor(id="shell:alice"), Actor(id="shell:bob"), Actor(id="shell:eve")


def test_default_policy_decisions(policy: Policy) -> None:
    assert policy.decide(EVE, "prometheus.query") == Allow("everyone reads")
    scale = policy.decide(ALICE, "k8s.scale", namespace="shop", namespaced=True)
    assert isinstance(scale, NeedsApproval)
    assert (
        scale.approvers == ("group:oncall",)
        and scale.min_approvals == 1
        and scale.ttl == timedelta(minutes=15)
    )
    rollback = policy.decide(BOB, "k8s.rollback", namespace="staging", namespaced=True)
    assert isinstance(rollback, NeedsApproval) and rollback.min_approvals == 2
    # deny by default: a reader cannot write, and a namespaced rule never grants other namespaces
    assert isinstance(policy.decide(EVE, "k8s.scale", namespace="shop", namespaced=True), Deny)
    assert isinstance(
        policy.decide(ALICE, "k8s.scale", namespace="kube-system", namespaced=True), Deny
    )
    assert isinstance(policy.decide(ALICE, "k8s.scale", namespace=None, namespaced=True), Deny)
    assert isinstance(policy.decide(ALICE, "no.such.skill"), Deny)


def test_first_match_wins_and_deny_rules(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("""
groups: {sre: [shell:alice, discord-role:42]}
rules:
  - {name: no prod, subjects: ["*"], skills: ["k8s.*"], namespaces: [prod], effect: deny, reason: prod is frozen}
  - {name: sre all, subjects: [group:sre], skills: ["*"], effect: allow}
  - {name: ops channel only, subjects: ["*"], skills: [help], channels: ["ops-*"], effect: allow}
""")
    policy = Policy.load(tmp_path / "p.yaml")
    assert policy.decide(ALICE, "k8s.restart", namespace="prod", namespaced=True) == Deny(
        "prod is frozen", "no prod"
    )
    assert policy.decide(ALICE, "k8s.restart", namespace="shop", namespaced=True) == Allow(
        "sre all"
    )
    role_holder = Actor(id="discord:99", roles=("discord-role:42",))
    assert "group:sre" in policy.subjects_of(role_holder)
    assert policy.decide(EVE, "help", channel="ops-main") == Allow("ops channel only")
    assert isinstance(policy.decide(EVE, "help", channel="random"), Deny)
    assert policy.permitted(ALICE, "k8s.restart", namespaced=True)
    assert not policy.permitted(EVE, "k8s.restart", namespaced=True)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (
            "rules:\n  - name: x\n    subjects: ['*']\n    skills: [help]\n    effect: maybe\n",
            5,
            "effect",
        ),
        (
            "rules:\n  - name: x\n    subjects: ['*']\n    skills: [help]\n    effect: approve\n",
            2,
            "effect: approve needs a non-empty approvers list",
        ),
        (
            "groups:\n  sre: [a]\nrules:\n  - name: x\n    subjects: [group:ops]\n    skills: [h]\n    effect: allow\n",
            None,
            "unknown group 'group:ops'",
        ),
        (
            "rules:\n  - name: x\n    subjects: ['*']\n    skills: [help]\n    effect: allow\n    ttl: soon\n",
            6,
            "not a duration",
        ),
        ("rules:\n  - name: x\n    subject: ['*']\n", 3, "unknown key 'subject'"),
        ("rules: [\n", 2, "invalid YAML"),
    ],
)
def test_malformed_policies_name_file_line_and_reason(
    tmp_path: Path, text: str, line: int | None, reason: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as err:
        Policy.load(path)
    message = str(err.value)
    assert str(path) in message and reason in message
    if line is not None:
        assert f"{path}:{line}:" in message


def test_folder_merges_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "10-groups.yaml").write_text("groups: {sre: [shell:alice]}\n")
    (tmp_path / "20-rules.yaml").write_text(
        "rules: [{name: sre, subjects: [group:sre], skills: ['*'], effect: allow}]\n"
    )
    policy = Policy.load(tmp_path)
    assert policy.decide(ALICE, "k8s.scale", namespace="x", namespaced=True) == Allow("sre")
    with pytest.raises(PolicyError, match="no such policy"):
        Policy.load(tmp_path / "missing.yaml")


def test_may_approve_uses_current_groups(policy: Policy) -> None:
    assert policy.may_approve(BOB, ["group:oncall"])
    assert not policy.may_approve(EVE, ["group:oncall"])


def test_every_problem_of_a_folder_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "10-a.yaml").write_text(
        "rules:\n  - name: a\n    subjects: ['*']\n    skills: [help]\n    effect: maybe\n"
        "  - name: b\n    subjects: ['*']\n    skils: [help]\n    effect: allow\n"
    )
    (tmp_path / "20-b.yaml").write_text("rules: [\n")
    with pytest.raises(PolicyError) as err:
        Policy.load(tmp_path)
    assert err.value.problems == [
        f"{tmp_path / '10-a.yaml'}:8: rules.1.skils: unknown key 'skils'",
        f"{tmp_path / '10-a.yaml'}:5: rules.0.effect: Input should be 'allow', 'deny' or 'approve'",
        f"{tmp_path / '10-a.yaml'}:6: rules.1.skills: Field required",
        f"{tmp_path / '20-b.yaml'}:2: invalid YAML: expected the node content, but found "
        "'<stream end>'",
    ]
    (tmp_path / "10-a.yaml").write_text(
        "rules:\n  - {name: a, subjects: [group:x], skills: [help], effect: allow}\n"
        "  - {name: a, subjects: ['*'], skills: [help], effect: allow, reason: twice}\n"
        "  - {name: c, subjects: ['*'], skills: [help], effect: approve, approvers: [group:y]}\n"
    )
    (tmp_path / "20-b.yaml").unlink()
    with pytest.raises(PolicyError) as err:
        Policy.load(tmp_path)
    where = tmp_path / "10-a.yaml"
    assert err.value.problems == [
        f"{where}:2: rule 'a' names unknown group 'group:x'",
        f"{where}:3: rule names must be unique: 'a' appears twice",
        f"{where}:4: rule 'c' names unknown group 'group:y'",
    ]


def test_warnings_name_patterns_that_match_no_installed_skill(tmp_path: Path) -> None:
    skills = ["alerts.list", "alerts.silence", "help", "k8s.restart"]
    path = tmp_path / "p.yaml"
    path.write_text(
        "rules:\n"
        "  - name: readers\n    subjects: ['*']\n    effect: allow\n"
        "    skills: ['alerts.*', help, alerts.silenc, 'logs.*']\n"
    )
    assert Policy.load(path).warnings(skills) == [
        f"{path}:5: rule 'readers': 'alerts.silenc' matches no installed skill "
        "(did you mean alerts.silence?)",
        f"{path}:5: rule 'readers': 'logs.*' matches no installed skill",
    ]
    path.write_text("groups: {}\n")
    [deny_all] = Policy.load(path).warnings(skills)
    assert deny_all.startswith(f"{path}: no rules, so every request is denied")


def test_permitted_remembers_answers_but_follows_the_groups_and_the_rules(
    policy: Policy,
) -> None:
    """The catalog filter is asked many times per request: its answers are kept, by the
    subjects the actor has now (group changes count at once) and the rule list."""
    dave = Actor(id="shell:dave")
    assert not policy.permitted(dave, "alerts.silence")
    assert not policy.permitted(dave, "alerts.silence")  # the kept answer
    policy.doc.groups["oncall"].append("shell:dave")
    assert policy.permitted(dave, "alerts.silence")
    policy.doc.groups["oncall"].remove("shell:dave")
    assert not policy.permitted(dave, "alerts.silence")
    assert policy.permitted(dave, "help")
    policy.doc.rules = []  # another rule list: nothing is kept from the old one
    assert not policy.permitted(dave, "help")
