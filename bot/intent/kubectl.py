"""kubectl's command grammar, for a request typed as a kubectl command.

Two entry points:

- :func:`options` reads kubectl's options and ``TYPE/NAME`` references out of *any* request
  ("restart deployment/cart -n shop", "logs checkout --tail=50"): ``-n``/``--namespace``,
  ``-l``/``--selector``, ``-c``/``--container``, ``--tail``, ``--since``, ``--replicas``,
  ``--to-revision``, ``-o``...; the argument pipeline reads them first.
- :func:`command` parses a whole request that *is* a kubectl command (``kubectl``, ``k`` or
  ``oc`` first, or a kubectl verb followed by a resource, a ``TYPE/NAME`` or an option:
  "get po -n shop", "rollout undo deploy/cart -n shop --to-revision=4") with :mod:`shlex` and
  :mod:`argparse` (kubectl's own option syntax: ``--flag=value``, ``--flag value``, ``-n
  shop``, ``-nshop``, options anywhere), and :func:`translate` maps it to the skill that does
  the same thing, or to a refusal that says what opsbot can do instead (``exec``, ``delete``,
  ``apply``, ``get secret``...). Nothing is ever run from a refusal.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

#: kubectl's resource names, plural and short forms -> the kind opsbot calls it
KINDS: dict[str, str] = {}
for _kind, _names in {
    "pod": "pod pods po",
    "deployment": "deployment deployments deploy deploys deployment.apps deployments.apps",
    "statefulset": "statefulset statefulsets sts",
    "daemonset": "daemonset daemonsets ds",
    "replicaset": "replicaset replicasets rs",
    "service": "service services svc",
    "node": "node nodes no",
    "event": "event events ev",
    "namespace": "namespace namespaces ns",
    "secret": "secret secrets",
    "configmap": "configmap configmaps cm",
    "ingress": "ingress ingresses ing",
    "job": "job jobs",
    "cronjob": "cronjob cronjobs cj",
    "hpa": "hpa horizontalpodautoscaler horizontalpodautoscalers",
    "pvc": "pvc persistentvolumeclaim persistentvolumeclaims",
    "serviceaccount": "serviceaccount serviceaccounts sa",
    "endpoints": "endpoints ep",
    "all": "all",
}.items():
    for _name in _names.split():
        KINDS[_name] = _kind

#: the kinds ``k8s.describe`` reads
DESCRIBABLE = ("deployment", "pod", "statefulset", "daemonset", "service", "node")
#: the kinds ``rollout`` and ``scale`` act on (a skill that takes a ``kind`` says which)
WORKLOADS = ("deployment", "statefulset", "daemonset")
#: kubectl verbs opsbot maps to a skill
SUPPORTED = ("get", "describe", "logs", "log", "rollout", "scale", "top", "events")
#: kubectl verbs opsbot never runs, with what to use instead
UNSUPPORTED: dict[str, str] = {
    "exec": "I don't open shells in containers",
    "attach": "I don't attach to containers",
    "cp": "I don't copy files out of or into containers",
    "port-forward": "I don't forward ports",
    "proxy": "I don't proxy the API server",
    "debug": "I don't start debug containers",
    "run": "I don't start pods",
    "delete": "I don't delete objects",
    "apply": "I don't apply manifests",
    "create": "I don't create objects",
    "replace": "I don't replace objects",
    "edit": "I don't edit objects",
    "patch": "I don't patch objects",
    "set": "I don't change images, resources or env",
    "label": "I don't change labels",
    "annotate": "I don't change annotations",
    "expose": "I don't create services",
    "autoscale": "I don't create autoscalers",
    "drain": "I don't drain nodes",
    "cordon": "I don't cordon nodes",
    "uncordon": "I don't uncordon nodes",
    "taint": "I don't taint nodes",
    "certificate": "I don't approve certificates",
    "auth": "I don't answer RBAC questions",
    "config": "I don't change kubeconfig",
    "wait": "I don't wait on conditions",
    "diff": "I don't diff manifests",
    "kustomize": "I don't build kustomizations",
    "plugin": "I don't run plugins",
}
VERBS = frozenset(SUPPORTED) | frozenset(UNSUPPORTED)
#: what opsbot does with kubectl's syntax, offered instead of what it refuses
CAN_DO = (
    "`get pods`, `describe`, `logs`, `get events`, `rollout status|history`, `top pods`; "
    "with approval: `rollout restart`, `scale --replicas=N`, `rollout undo [--to-revision=N]`"
)
PREFIXES = frozenset({"kubectl", "k", "kc", "oc", "kubectl.exe"})

# option name -> (the key it is read as, takes a value)
_OPTIONS: dict[str, tuple[str, bool]] = {
    "-n": ("namespace", True),
    "--namespace": ("namespace", True),
    "-l": ("selector", True),
    "--selector": ("selector", True),
    "-c": ("container", True),
    "--container": ("container", True),
    "--tail": ("tail", True),
    "--since": ("since", True),
    "--replicas": ("replicas", True),
    "--current-replicas": ("current-replicas", True),
    "--to-revision": ("to-revision", True),
    "--revision": ("revision", True),
    "-o": ("output", True),
    "--output": ("output", True),
    "--context": ("context", True),
    "--cluster": ("cluster", True),
    "--sort-by": ("sort-by", True),
    "--field-selector": ("field-selector", True),
    "--timeout": ("timeout", True),
    "--limit": ("limit", True),
    "-A": ("all-namespaces", False),
    "--all-namespaces": ("all-namespaces", False),
    "-f": ("follow", False),
    "--follow": ("follow", False),
    "-w": ("watch", False),
    "--watch": ("watch", False),
    "-p": ("previous", False),
    "--previous": ("previous", False),
    "--timestamps": ("timestamps", False),
    "--all-containers": ("all-containers", False),
    "-i": ("stdin", False),
    "--stdin": ("stdin", False),
    "-t": ("tty", False),
    "--tty": ("tty", False),
    "-it": ("tty", False),
}
_REF = re.compile(r"^([a-z][a-z.]*)/([a-z0-9][a-z0-9.-]*)$", re.I)
_SHORT_GLUED = re.compile(r"^-([nlc])([a-z0-9].*)$")


@dataclass
class Options:
    """What :func:`options` found: option values by key (``namespace``, ``replicas``,
    ``to-revision``...), ``TYPE/NAME`` references as (kind, name), and the words left."""

    values: dict[str, str] = field(default_factory=dict)
    refs: list[tuple[str, str]] = field(default_factory=list)
    rest: str = ""


def ref(token: str) -> tuple[str, str] | None:
    """``deploy/cart`` -> ("deployment", "cart"); None when ``token`` is no such reference."""
    m = _REF.match(token.strip(".,;"))
    if not m or m.group(1).lower() not in KINDS:
        return None
    return KINDS[m.group(1).lower()], m.group(2).lower()


def options(text: str) -> Options:
    """kubectl's options and ``TYPE/NAME`` references anywhere in ``text`` (see module doc);
    ``rest`` keeps the other words, with each reference as "kind name"."""
    found = Options()
    kept: list[str] = []
    tokens = text.split()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, value = token.partition("=")
        glued = _SHORT_GLUED.match(token) if not eq else None
        if glued and f"-{glued.group(1)}" in _OPTIONS and len(token) > 2:
            key, _ = _OPTIONS[f"-{glued.group(1)}"]
            found.values.setdefault(key, glued.group(2).rstrip(".,;?!"))
            i += 1
            continue
        if name in _OPTIONS:
            key, takes = _OPTIONS[name]
            if not takes:
                found.values.setdefault(key, "true")
            elif eq:
                found.values.setdefault(key, value.strip("'\"").rstrip(".,;?!"))
            elif i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                found.values.setdefault(key, tokens[i + 1].strip("'\"").rstrip(".,;?!"))
                i += 1
            i += 1
            continue
        reference = ref(token)
        if reference:
            found.refs.append(reference)
            kept.extend(reference)
        else:
            kept.append(token)
        i += 1
    found.rest = " ".join(kept)
    return found


# -- whole commands -------------------------------------------------------------------------


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit the process
        raise _Refused(message)


@lru_cache(maxsize=1)
def _parser() -> _Parser:
    parser = _Parser(prog="kubectl", add_help=False, exit_on_error=False, allow_abbrev=False)
    by_key: dict[str, list[str]] = {}
    takes: dict[str, bool] = {}
    for option, (key, value) in _OPTIONS.items():
        if option == "-it":
            continue
        by_key.setdefault(key, []).append(option)
        takes[key] = value
    for key, flags in by_key.items():
        if takes[key]:
            parser.add_argument(*flags, dest=key, default=None)
        else:
            parser.add_argument(*flags, dest=key, action="store_true", default=False)
    parser.add_argument("words", nargs="*")
    return parser


@dataclass
class Command:
    """A parsed kubectl command: ``verb`` (``rollout``), ``sub`` (``undo``), ``kind`` and
    ``names`` of the resource, the option values (keys as in :func:`options`)."""

    verb: str
    sub: str = ""
    kind: str = ""
    names: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def name(self) -> str:
        return self.names[0] if self.names else ""

    @property
    def shown(self) -> str:
        return " ".join(filter(None, ["kubectl", self.verb, self.sub, self.kind]))


_LEAD = re.compile(
    r"^\s*(?:(?:please|pls|plz|ok|okay|now)[,\s]+)*(?:(?:can|could|would) you\s+)?"
    r"(?:(?:please|just)\s+)?(?:run\s+)?(?:\$\s*)?",
    re.I,
)
_SUBVERBS = ("restart", "undo", "status", "history", "pause", "resume")


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: read it as plain words
        return text.split()


def command(text: str) -> Command | None:
    """The kubectl command ``text`` is, or None when it reads as a sentence (see module doc)."""
    body = _LEAD.sub("", text.strip()).rstrip(" ?!.")
    body = re.split(r"\s+\|\s+|\s*&&\s*|;\s", body, maxsplit=1)[0]  # "... | grep x"
    first = body.split(maxsplit=1)[0].lower() if body.strip() else ""
    if first not in PREFIXES and first not in VERBS:
        return None  # the common case, decided before any tokenizing
    tokens = _tokens(body)
    prefixed = bool(tokens) and tokens[0].lower() in PREFIXES
    if prefixed:
        tokens = tokens[1:]
    i = 0
    while i < len(tokens) and tokens[i].startswith("-"):  # kubectl -n shop get pods
        option = tokens[i].split("=")[0]
        i += 2 if _OPTIONS.get(option, ("", False))[1] and "=" not in tokens[i] else 1
    if i >= len(tokens) or tokens[i].lower() not in VERBS or (i and not prefixed):
        return None
    verb = tokens[i].lower()
    if not prefixed and not _command_like(verb, tokens[i + 1 :]):
        return None
    try:
        parsed, _unknown = _parser().parse_known_intermixed_args(tokens)
    except (_Refused, argparse.ArgumentError, TypeError, ValueError):
        return None
    values = {k: str(v) for k, v in vars(parsed).items() if k != "words" and v not in (None, False)}
    words = list(parsed.words or [])
    if words and words[0].lower() == verb:
        words = words[1:]
    found = Command(verb="logs" if verb == "log" else verb, values=values, text=text)
    if found.verb == "rollout" and words and words[0].lower() in _SUBVERBS:
        found.sub = words.pop(0).lower()
    for word in words:
        reference = ref(word)
        if reference:
            found.kind = found.kind or reference[0]
            found.names.append(reference[1])
        elif not found.kind and word.lower() in KINDS and not found.names:
            found.kind = KINDS[word.lower()]
        elif "," in word and all(w in KINDS for w in word.lower().split(",")):
            found.kind = found.kind or KINDS[word.lower().split(",")[0]]
        else:
            found.names.append(word.lower())
    return found


#: words of English, never of a kubectl command line
_ENGLISH = frozenset(
    re.findall(
        r"\S+",
        "a an the of for from in on at to with about since over into my our its their this "
        "that is are was were be me us please and or but not any some all last past",
    )
)


def _command_like(verb: str, rest: list[str]) -> bool:
    """Whether words after a kubectl verb read as its arguments, not as English ("logs for
    payments since 2h -n shop" is a sentence with an option in it)."""
    if not rest:
        return False
    first = rest[0].lower()
    if any(t.lower() in _ENGLISH for t in rest if not t.startswith("-")):
        return False
    if verb == "rollout":
        return first in _SUBVERBS
    if any(t.startswith("-") and t.split("=")[0] in _OPTIONS for t in rest):
        return True
    if any(ref(t) for t in rest):
        return True
    if verb in ("get", "describe", "top", "delete", "edit", "patch", "label", "annotate", "scale"):
        return first in KINDS and first not in ("all",)
    return verb in ("exec", "port-forward", "cp", "attach") and bool(
        re.match(r"^[a-z0-9-]+$", first)
    )


# -- what a command does here -----------------------------------------------------------------


@dataclass(frozen=True)
class Mapped:
    """The skill that does what the command asks, with its arguments (``recipe``: the
    PromQL recipe that stands for ``kubectl top``)."""

    skill: str
    args: dict[str, Any]
    recipe: str = ""
    note: str = ""


@dataclass(frozen=True)
class Refusal:
    """A command opsbot does not run: why, and what it can do instead."""

    text: str


def refusal(why: str, command: Command) -> Refusal:
    return Refusal(
        f"{why}: `{command.shown}` is not something I run, and nothing was run. "
        f"In kubectl's syntax I can do {CAN_DO}."
    )


def kind_refused(cmd: Command, kind: str, takes: str = "deployments") -> Refusal:
    """The refusal of ``cmd`` on a ``kind`` its skill does not act on ("I restart
    deployments only, not cronjobs")."""
    return refusal(f"I {cmd.verb} {takes} only, not {kind}s", cmd)


def translate(cmd: Command) -> Mapped | Refusal:
    """The skill (and arguments) that does what ``cmd`` asks, or why it is refused."""
    values = cmd.values
    namespace = values.get("namespace")
    base: dict[str, Any] = {"namespace": namespace} if namespace else {}
    if cmd.verb in UNSUPPORTED:
        return refusal(UNSUPPORTED[cmd.verb], cmd)
    if cmd.kind in ("secret", "configmap", "serviceaccount"):
        return refusal(f"I never show {cmd.kind}s (they hold credentials and settings)", cmd)
    if cmd.verb == "events" or (cmd.verb == "get" and cmd.kind == "event"):
        return Mapped("k8s.events", {**base, **_since(values)})
    if cmd.verb == "get":
        if cmd.kind == "pod":
            args = {**base, **({"name": cmd.name} if cmd.name else {})}
            if values.get("selector"):
                args["selector"] = values["selector"]
            return Mapped("k8s.pods", args)
        if cmd.kind in DESCRIBABLE and cmd.name:
            note = "" if not values.get("output") else "shown as described fields, not raw output"
            return Mapped("k8s.describe", {**base, "kind": cmd.kind, "name": cmd.name}, note=note)
        if cmd.kind in ("deployment", "statefulset", "daemonset", "replicaset", "all", ""):
            return Mapped("k8s.pods", base, note="the pods of the namespace, by workload")
        return refusal(f"I don't list {cmd.kind or 'that'}", cmd)
    if cmd.verb == "describe":
        kind = cmd.kind or "deployment"
        if kind not in DESCRIBABLE:
            return refusal(f"I don't describe {kind}s", cmd)
        return Mapped(
            "k8s.describe",
            {**base, "kind": kind, "name": cmd.name} if cmd.name else {**base, "kind": kind},
        )
    if cmd.verb == "logs":
        name = cmd.name or _app(values.get("selector", ""))
        args = {**base, **({"name": name} if name else {}), **_since(values)}
        if values.get("container"):
            args["container"] = values["container"]
        if values.get("tail", "").isdigit():
            args["tail"] = int(values["tail"])
        return Mapped("k8s.logs", args)
    if cmd.verb == "top":
        if cmd.kind in ("pod", ""):
            return Mapped("prometheus.query", base, recipe="top")
        return refusal(f"I don't show top for {cmd.kind}s", cmd)
    if cmd.kind not in (*WORKLOADS, ""):
        return kind_refused(cmd, cmd.kind, "deployments and other workloads")
    if cmd.verb == "scale" and cmd.kind == "daemonset":
        return refusal("A daemonset runs one pod per node: it has no replicas to scale", cmd)
    workload = {**base, **({"name": cmd.name} if cmd.name else {})}
    if cmd.kind not in ("deployment", ""):  # sts/x, ds/x: the skill says whether it acts on it
        workload["kind"] = cmd.kind
    if cmd.verb == "scale":
        if values.get("replicas", "").isdigit():
            workload["replicas"] = int(values["replicas"])
        elif len(cmd.names) > 1 and cmd.names[1].isdigit():  # "scale deploy checkout 3"
            workload["replicas"] = int(cmd.names[1])
        return Mapped("k8s.scale", workload)
    if cmd.verb == "rollout":
        if cmd.sub == "restart":
            return Mapped("k8s.restart", workload)
        if cmd.sub == "undo":
            if values.get("to-revision", "").isdigit():
                workload["revision"] = int(values["to-revision"])
            return Mapped("k8s.rollback", workload)
        if cmd.sub == "status":
            return Mapped("k8s.rollout.status", workload)
        if cmd.sub == "history":
            return Mapped("k8s.rollout.history", workload)
        return refusal(f"I don't {cmd.sub or 'do that with'} rollouts", cmd)
    return refusal("I don't know that command", cmd)


def _app(selector: str) -> str:
    """``app=checkout`` (or ``app.kubernetes.io/name=checkout``) -> ``checkout``."""
    m = re.fullmatch(
        r"(?:app|app\.kubernetes\.io/name|k8s-app|name)=([a-z0-9][a-z0-9.-]*)", selector
    )
    return m.group(1) if m else ""


def _since(values: dict[str, str]) -> dict[str, Any]:
    since = values.get("since", "")
    return {"since": since} if re.fullmatch(r"(?:\d+[smhdw])+", since) else {}
