"""A fake Slack Web API that answers as Slack does, including its refusals
(``AsyncWebClient(base_url=...)``). Every call is recorded with the fake's answer.

Methods, in the shapes of Slack's Web API reference (https://docs.slack.dev/reference/methods):
``auth.test`` (granted scopes in the ``x-oauth-scopes`` header), ``chat.postMessage``,
``chat.update``, ``chat.postEphemeral``, ``views.open``, ``usergroups.list``,
``usergroups.users.list``, ``apps.connections.open`` (Socket Mode: answers ``socket_url``,
see tests/fakes/slack_socket.py), the upload flow ``files.getUploadURLExternal`` -> POST to the
upload URL -> ``files.completeUploadExternal``, and the ``response_url`` of interactions and
slash commands (``/response/<id>``, recorded in ``responses``).

What it refuses, and the documentation it follows:

- Authentication: every method wants ``Authorization: Bearer <token>`` with the bot token
  (``token``; any ``xoxb-`` token when not set) and ``apps.connections.open`` the app-level
  ``xapp-`` token: ``not_authed`` / ``invalid_auth`` / ``not_allowed_token_type``
  (https://docs.slack.dev/authentication/tokens).
- Block Kit (https://docs.slack.dev/reference/block-kit/blocks): at most 50 blocks in a message
  (100 in a modal); ``block_id`` at most 255 characters and unique in the message; a
  ``section`` has text (1-3,000 characters) or 1-10 ``fields`` of at most 2,000 characters;
  a ``context`` has 1-10 elements; an ``actions`` block 1-25 elements, each button's label
  (``plain_text``) at most 75 characters, ``value`` at most 2,000, ``action_id`` at most 255
  and unique in its block (https://docs.slack.dev/reference/block-kit/block-elements/button-element);
  a ``header`` at most 150 characters. A message that breaks any of these is answered
  ``invalid_blocks`` with Slack's ``errors`` list, and nothing is posted.
- ``chat.postMessage`` / ``chat.update`` / ``chat.postEphemeral``
  (https://docs.slack.dev/reference/methods/chat.postMessage): ``no_text`` without text or
  blocks; ``msg_too_long`` when ``text`` is longer than 40,000 characters (Slack's ceiling for
  a message's text); ``not_in_channel`` in a channel the bot has not joined (``outside``);
  ``chat.update`` of a message the bot did not post there: ``message_not_found``
  (https://docs.slack.dev/reference/methods/chat.update).
- ``views.open`` (https://docs.slack.dev/reference/methods/views.open): a ``trigger_id`` is
  good once, for 3 seconds after the interaction that carried it (``issue_trigger``):
  ``expired_trigger_id``, ``exchanged_trigger_id``, ``invalid_trigger_id``; a modal's title,
  submit and close labels at most 24 characters, ``private_metadata`` at most 3,000,
  ``callback_id`` at most 255, at most 100 blocks (https://docs.slack.dev/reference/views/modal-views):
  ``invalid_arguments``.
- Rate limits (https://docs.slack.dev/apis/web-api/rate-limits): a method planned to be
  limited (``fail[method] = [429]``) answers HTTP 429 ``ratelimited`` with ``Retry-After``
  (``retry_after`` seconds), and keeps answering 429 to calls that come back sooner
  (counted in ``early_retries``).
- Uploads (https://docs.slack.dev/reference/methods/files.getUploadURLExternal,
  https://docs.slack.dev/reference/methods/files.completeUploadExternal): ``filename`` and a
  positive ``length`` are required (``invalid_arguments``); the bytes posted to the upload URL
  must be exactly ``length`` long (HTTP 400 otherwise); completing a file that was not
  uploaded is ``file_not_found``; sharing it where the bot is not: ``not_in_channel``.

``fail[method]`` also plans plain errors (``["ratelimited", "not_in_channel"]``...), one per
call.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SCOPES = "app_mentions:read,chat:write,commands,files:write,im:history"
TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"

MAX_BLOCKS = 50
MAX_MODAL_BLOCKS = 100
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ID = 255
MAX_HEADER = 150
MAX_MESSAGE_TEXT = 40_000
MAX_MODAL_TITLE = 24
MAX_METADATA = 3000
TRIGGER_TTL = 3.0


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    answer: dict[str, Any] = field(default_factory=dict)
    status: int = 200


def _text_errors(obj: Any, where: str, limit: int, *, kinds: tuple[str, ...]) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return [f"must be a text object of type {' or '.join(kinds)} [json-pointer:{where}]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{where}/text]"]
    if len(text) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{where}/text]"]
    return []


def block_errors(blocks: Any, *, limit: int = MAX_BLOCKS) -> list[str]:
    """Slack's ``invalid_blocks`` errors for ``blocks`` (empty when Slack would accept them)."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > limit:
        errors.append(f"must provide at most {limit} items [json-pointer:/blocks]")
    seen: set[str] = set()
    for i, block in enumerate(blocks):
        at = f"/blocks/{i}"
        if not isinstance(block, dict):
            errors.append(f"must be an object [json-pointer:{at}]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if len(str(block_id)) > MAX_ID:
                errors.append(
                    f"must be less than {MAX_ID + 1} characters [json-pointer:{at}/block_id]"
                )
            if block_id in seen:
                errors.append(f"duplicate block_id {block_id} [json-pointer:{at}/block_id]")
            seen.add(str(block_id))
        kind = block.get("type")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                errors.append(f"must provide text or fields [json-pointer:{at}]")
            if "text" in block:
                errors += _text_errors(
                    block["text"], f"{at}/text", MAX_SECTION_TEXT, kinds=("mrkdwn", "plain_text")
                )
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= MAX_FIELDS:
                    errors.append(
                        f"must provide 1 to {MAX_FIELDS} items [json-pointer:{at}/fields]"
                    )
                for j, item in enumerate(fields if isinstance(fields, list) else []):
                    errors += _text_errors(
                        item, f"{at}/fields/{j}", MAX_FIELD_TEXT, kinds=("mrkdwn", "plain_text")
                    )
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
                errors.append(
                    f"must provide 1 to {MAX_CONTEXT_ELEMENTS} items [json-pointer:{at}/elements]"
                )
            for j, item in enumerate(elements if isinstance(elements, list) else []):
                if isinstance(item, dict) and item.get("type") == "image":
                    continue
                errors += _text_errors(
                    item, f"{at}/elements/{j}", MAX_SECTION_TEXT, kinds=("mrkdwn", "plain_text")
                )
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS_ELEMENTS:
                errors.append(
                    f"must provide 1 to {MAX_ACTIONS_ELEMENTS} items [json-pointer:{at}/elements]"
                )
            action_ids: set[str] = set()
            for j, item in enumerate(elements if isinstance(elements, list) else []):
                where = f"{at}/elements/{j}"
                if not isinstance(item, dict) or item.get("type") != "button":
                    continue
                errors += _text_errors(
                    item.get("text"), f"{where}/text", MAX_BUTTON_TEXT, kinds=("plain_text",)
                )
                if len(str(item.get("value", ""))) > MAX_BUTTON_VALUE:
                    errors.append(
                        f"must be less than {MAX_BUTTON_VALUE + 1} characters "
                        f"[json-pointer:{where}/value]"
                    )
                action_id = str(item.get("action_id", ""))
                if len(action_id) > MAX_ID:
                    errors.append(
                        f"must be less than {MAX_ID + 1} characters [json-pointer:{where}/action_id]"
                    )
                if action_id and action_id in action_ids:
                    errors.append(f"duplicate action_id {action_id} [json-pointer:{where}]")
                action_ids.add(action_id)
                if item.get("style") not in (None, "primary", "danger"):
                    errors.append(f"must be primary or danger [json-pointer:{where}/style]")
        elif kind == "header":
            errors += _text_errors(
                block.get("text"), f"{at}/text", MAX_HEADER, kinds=("plain_text",)
            )
        elif kind == "input":
            errors += _text_errors(block.get("label"), f"{at}/label", 2000, kinds=("plain_text",))
        elif kind not in ("divider", "image", "rich_text", "markdown", "file"):
            errors.append(f"unsupported type {kind} [json-pointer:{at}/type]")
    return errors


@dataclass
class FakeSlack:
    #: the bot token Slack knows (None: any well-formed ``xoxb-`` token)
    token: str | None = None
    scopes: str = SCOPES
    #: user groups with their members (None: usergroups.list answers missing_scope)
    groups: list[dict[str, Any]] | None = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    fail: dict[str, list[int | str]] = field(default_factory=dict)
    #: channels the bot has not joined (posting there is ``not_in_channel``)
    outside: set[str] = field(default_factory=set)
    #: what was posted to response URLs: (response id, body)
    responses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: the Socket Mode WebSocket URL ``apps.connections.open`` answers (None: not offered)
    socket_url: str | None = None
    retry_after: int = 1
    #: calls made while a rate limit still held (the client did not wait ``Retry-After``)
    early_retries: int = 0
    base_url: str = ""
    root: str = ""
    #: (channel, ts) -> the message the bot posted there (what chat.update may edit)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _triggers: dict[str, float] = field(default_factory=dict)
    _limited: dict[str, float] = field(default_factory=dict)
    _pending_files: dict[str, int] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _ts: Any = field(default_factory=lambda: itertools.count(1))

    # -- for tests --------------------------------------------------------------------------

    def of(self, method: str) -> list[dict[str, Any]]:
        """The parameters of every call of ``method`` that Slack accepted."""
        return [c.params for c in self.calls if c.method == method and c.answer.get("ok")]

    def refused(self, method: str = "") -> list[Call]:
        """Calls Slack answered with an error (of ``method``, or all)."""
        return [
            c for c in self.calls if not c.answer.get("ok") and (not method or c.method == method)
        ]

    def posted(self, method: str = "chat.postMessage") -> list[Call]:
        return [c for c in self.calls if c.method == method and c.answer.get("ok")]

    async def wait_for(
        self, method: str, count: int = 1, within: float = 10.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.of(method)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{method} accepted {len(self.of(method))} times, wanted {count}: "
                    f"{[(c.method, c.answer.get('error')) for c in self.calls]}"
                )
            await asyncio.sleep(0.02)
        return self.of(method)

    async def wait_for_response(self, count: int = 1, within: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.responses) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.responses)} posts to response URLs, wanted {count}")
            await asyncio.sleep(0.02)
        return [body for _, body in self.responses]

    def issue_trigger(self, trigger_id: str) -> str:
        """A ``trigger_id`` Slack just sent with an interaction (good once, for 3 s)."""
        self._triggers[trigger_id] = time.monotonic()
        return trigger_id

    def response_url(self, name: str) -> str:
        return f"{self.root}/response/{name}"

    # -- server -----------------------------------------------------------------------------

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # e.g. usergroups.list is a GET
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{name}", self._response)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/api/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        expected = self._pending_files.get(file_id)
        if expected is None:
            return web.Response(status=404, text="unknown upload URL")
        if len(data) != expected:
            return web.Response(
                status=400, text=f"the upload is {len(data)} bytes, not the {expected} announced"
            )
        self.uploads[file_id] = data
        return web.Response(text="OK")

    async def _response(self, request: web.Request) -> web.Response:
        body = await request.json()
        errors = block_errors(body["blocks"]) if "blocks" in body else []
        text = str(body.get("text", ""))
        if errors or len(text) > MAX_MESSAGE_TEXT or not (text or body.get("blocks")):
            return web.Response(status=400, text="invalid_blocks" if errors else "no_text")
        self.responses.append((request.match_info["name"], body))
        return web.Response(text="ok")

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.method == "GET":
            params: dict[str, Any] = {}
        elif request.content_type == "application/json":
            params = await request.json()
        else:
            params = {k: v for k, v in (await request.post()).items()}
        params = {**request.query, **params}  # some SDK methods send a query string
        for key in ("blocks", "view", "files"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        call = Call(method, params)
        self.calls.append(call)
        status, answer, headers = self._answer(method, params, request.headers)
        call.answer, call.status = answer, status
        return web.json_response(
            answer, status=status, headers={"x-oauth-scopes": self.scopes, **headers}
        )

    def _answer(
        self, method: str, params: dict[str, Any], headers: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        now = time.monotonic()
        if self._limited.get(method, 0.0) > now:
            self.early_retries += 1
            return self._ratelimited(method)
        token = str(headers.get("Authorization", "")).removeprefix("Bearer ") or str(
            params.get("token", "")
        )
        wanted = APP_TOKEN if method == "apps.connections.open" else (self.token or "xoxb-")
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token.split("-", 1)[0] != wanted.split("-", 1)[0]:
            return 200, {"ok": False, "error": "not_allowed_token_type"}, {}
        if token != wanted and not wanted.endswith("-"):
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        planned = self.fail.get(method)
        if planned:
            failure = planned.pop(0)
            if failure == 429:
                return self._ratelimited(method)
            return 200, {"ok": False, "error": str(failure)}, {}
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        answer = handler(params) if handler is not None else {"ok": True}
        return 200, answer, {}

    def _ratelimited(self, method: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        self._limited[method] = time.monotonic() + self.retry_after
        return (
            429,
            {"ok": False, "error": "ratelimited"},
            {"Retry-After": str(self.retry_after)},
        )

    def _new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _refuse_message(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """Why Slack refuses this message (None: it accepts it)."""
        channel = str(params.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if channel in self.outside:
            return {"ok": False, "error": "not_in_channel"}
        blocks = params.get("blocks")
        text = params.get("text")
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        if blocks is not None:
            errors = block_errors(blocks)
            if errors:
                return {
                    "ok": False,
                    "error": "invalid_blocks",
                    "errors": errors,
                    "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]},
                }
        if text is not None and len(str(text)) > MAX_MESSAGE_TEXT:
            return {"ok": False, "error": "msg_too_long"}
        return None

    # -- methods ----------------------------------------------------------------------------

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://opsbot-test.slack.com/",
            "team": "test",
            "user": "opsbot",
            "team_id": "T1",
            "user_id": "UBOT",
            "bot_id": "BBOT",
        }

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        refused = self._refuse_message(params)
        if refused:
            return refused
        ts = self._new_ts()
        message = {
            "text": params.get("text", ""),
            "blocks": params.get("blocks", []),
            "ts": ts,
            "thread_ts": params.get("thread_ts"),
        }
        self.messages[(params["channel"], ts)] = message
        return {"ok": True, "channel": params["channel"], "ts": ts, "message": message}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        refused = self._refuse_message(params)
        if refused:
            return refused
        key = (str(params["channel"]), str(params.get("ts") or ""))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key].update(
            {"text": params.get("text", ""), "blocks": params.get("blocks", [])}
        )
        return {"ok": True, "channel": key[0], "ts": key[1], "text": params.get("text", "")}

    def _chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        refused = self._refuse_message(params)
        if refused:
            return refused
        if not params.get("user"):
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "message_ts": self._new_ts()}

    def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        trigger = str(params.get("trigger_id") or "")
        issued = self._triggers.get(trigger)
        if issued is None:
            return {"ok": False, "error": "invalid_trigger_id"}
        if issued < 0:
            return {"ok": False, "error": "exchanged_trigger_id"}
        if time.monotonic() - issued > TRIGGER_TTL:
            return {"ok": False, "error": "expired_trigger_id"}
        view = params.get("view") or {}
        problems = block_errors(view.get("blocks", []), limit=MAX_MODAL_BLOCKS)
        for key in ("title", "submit", "close"):
            if key in view:
                problems += _text_errors(
                    view[key], f"/view/{key}", MAX_MODAL_TITLE, kinds=("plain_text",)
                )
        if len(str(view.get("private_metadata", ""))) > MAX_METADATA:
            problems.append(
                f"must be less than {MAX_METADATA + 1} characters [json-pointer:/view/private_metadata]"
            )
        if len(str(view.get("callback_id", ""))) > MAX_ID:
            problems.append(
                f"must be less than {MAX_ID + 1} characters [json-pointer:/view/callback_id]"
            )
        if view.get("type") != "modal" or "title" not in view:
            problems.append("a modal needs type modal and a title [json-pointer:/view]")
        if problems:
            return {
                "ok": False,
                "error": "invalid_arguments",
                "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]},
            }
        self._triggers[trigger] = -1.0  # used
        return {"ok": True, "view": {"id": "V1", **view}}

    def _usergroups_list(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.groups is None:
            return {"ok": False, "error": "missing_scope", "needed": "usergroups:read"}
        return {"ok": True, "usergroups": self.groups}

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.groups is None:
            return {"ok": False, "error": "missing_scope", "needed": "usergroups:read"}
        group = next((g for g in self.groups if g["id"] == params.get("usergroup")), None)
        if group is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(group.get("users", []))}

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.socket_url is None:
            return {"ok": False, "error": "socket_mode_disabled"}
        return {"ok": True, "url": self.socket_url}

    def _files_getUploadURLExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            length = int(params.get("length") or 0)
        except ValueError:
            length = 0
        if not params.get("filename") or length <= 0:
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ts):06d}"
        self._pending_files[file_id] = length
        return {"ok": True, "upload_url": f"{self.root}/upload/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, params: dict[str, Any]) -> dict[str, Any]:
        files = params.get("files") or []
        if not files:
            return {"ok": False, "error": "invalid_arguments"}
        if any(f.get("id") not in self.uploads for f in files):
            return {"ok": False, "error": "file_not_found"}
        channel = params.get("channel_id")
        if channel and channel in self.outside:
            return {"ok": False, "error": "not_in_channel"}
        return {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]}
