"""Settings (pydantic-settings): environment first, then ``opsbot.yaml``, then defaults.

These are opsbot's own settings; each backend (``opsbot.skills.base.Backend``) reads its own
(``PROMETHEUS_URL``, ``KUBECONFIG``, ...) with its ``Config``. Variable names follow DESIGN.md ("Configuration"): the ecosystem's usual names where one
exists (``PROMETHEUS_URL``, ``OPENAI_API_KEY``, ``SLACK_BOT_TOKEN``), ``OPSBOT_*`` otherwise.
``opsbot.yaml`` (or the file named by ``OPSBOT_CONFIG``, which must then exist) may hold the
same keys in lower case. :func:`load_settings` raises :class:`~opsbot.errors.ConfigError`
naming the variable (or the file's key) of a setting that does not parse.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from opsbot.errors import ConfigError


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def chat_channel(value: str) -> str:
    """``value`` when it names a chat channel as ``discord:<id>`` or ``slack:<id>``."""
    platform, _, where = value.partition(":")
    if platform not in ("discord", "slack") or not where.strip():
        raise ValueError(f"a channel is discord:<channel id> or slack:<channel id>, not {value!r}")
    return value


class AlertRoute(BaseModel):
    """Where an Alertmanager alert group opens its incident thread: the first route whose
    ``matchers`` all hold for the group's labels (a label equal to the value, or to one of a
    list of values; no matchers: every group) names the ``channel``, as
    ``discord:<channel id>`` or ``slack:<channel id>``."""

    matchers: dict[str, str | list[str]] = Field(default_factory=dict)
    channel: str

    @field_validator("channel")
    @classmethod
    def _platform_channel(cls, value: str) -> str:
        return chat_channel(value)

    def matches(self, labels: dict[str, str]) -> bool:
        for name, wanted in self.matchers.items():
            allowed = [wanted] if isinstance(wanted, str) else wanted
            if labels.get(name) not in allowed:
                return False
        return True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field(
        "sqlite+aiosqlite:///opsbot.db",
        validation_alias=_env("OPSBOT_DATABASE_URL", "database_url"),
    )
    policy_path: Path = Field(
        Path("policies"), validation_alias=_env("OPSBOT_POLICY_PATH", "policy_path")
    )
    openai_api_key: str | None = Field(
        None, validation_alias=_env("OPENAI_API_KEY", "openai_api_key")
    )
    openai_base_url: str | None = Field(
        None, validation_alias=_env("OPENAI_BASE_URL", "openai_base_url")
    )
    llm_model: str | None = Field(None, validation_alias=_env("OPSBOT_LLM_MODEL", "llm_model"))
    llm_provider: str = Field(
        "openai",
        validation_alias=_env("OPSBOT_LLM_PROVIDER", "llm_provider"),
        description="openai (any OpenAI-compatible server), azure_openai, anthropic, ollama, ...",
    )
    llm_timeout: float = Field(30.0, validation_alias=_env("OPSBOT_LLM_TIMEOUT", "llm_timeout"))
    llm_retries: int = Field(2, validation_alias=_env("OPSBOT_LLM_RETRIES", "llm_retries"))
    llm_max_steps: int = Field(
        6,
        validation_alias=_env("OPSBOT_LLM_MAX_STEPS", "llm_max_steps"),
        description="model calls per request (each may run several read skills)",
    )
    llm_request_tokens: int = Field(
        30_000,
        validation_alias=_env("OPSBOT_LLM_REQUEST_TOKENS", "llm_request_tokens"),
        description="prompt+completion tokens one request may spend",
    )
    llm_tools: int = Field(
        6,
        ge=0,
        validation_alias=_env("OPSBOT_LLM_TOOLS", "llm_tools"),
        description="skills offered to the model per request, the offline router's best "
        "ranked for it (the model may ask for the others); 0 offers all it may use",
    )
    llm_user_daily_tokens: int = Field(
        300_000, validation_alias=_env("OPSBOT_LLM_USER_DAILY_TOKENS", "llm_user_daily_tokens")
    )
    llm_daily_tokens: int = Field(
        3_000_000, validation_alias=_env("OPSBOT_LLM_DAILY_TOKENS", "llm_daily_tokens")
    )
    llm_history_turns: int = Field(
        8, validation_alias=_env("OPSBOT_LLM_HISTORY_TURNS", "llm_history_turns")
    )
    #: USD per 1M tokens, by model name: {model: {input: 0.15, output: 0.6}}
    llm_prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: {
            "gpt-4o-mini": {"input": 0.15, "output": 0.60},
            "gpt-4o": {"input": 2.50, "output": 10.00},
            "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
        },
        validation_alias=_env("OPSBOT_LLM_PRICES", "llm_prices"),
    )
    slack_bot_token: str | None = Field(
        None, validation_alias=_env("SLACK_BOT_TOKEN", "slack_bot_token")
    )
    slack_app_token: str | None = Field(
        None, validation_alias=_env("SLACK_APP_TOKEN", "slack_app_token")
    )
    slack_signing_secret: str | None = Field(
        None, validation_alias=_env("SLACK_SIGNING_SECRET", "slack_signing_secret")
    )
    slack_api_url: str = Field(
        "https://slack.com/api/", validation_alias=_env("SLACK_API_URL", "slack_api_url")
    )
    discord_token: str | None = Field(None, validation_alias=_env("DISCORD_TOKEN", "discord_token"))
    discord_api_url: str | None = Field(
        None,
        validation_alias=_env("DISCORD_API_URL", "discord_api_url"),
        description="Discord REST base (proxies); default https://discord.com/api/v10",
    )
    discord_gateway_url: str | None = Field(
        None, validation_alias=_env("DISCORD_GATEWAY_URL", "discord_gateway_url")
    )
    adapters: str = Field(
        "slack,discord",
        validation_alias=_env("OPSBOT_ADAPTERS", "adapters"),
        description="chat adapters opsbot serve tries, comma-separated (each runs when its "
        "tokens are set): slack, discord, or one an installed package registers",
    )
    slash_command: str = Field(
        "/ops",
        pattern=r"^/?[a-z0-9_-]{1,32}$",
        validation_alias=_env("OPSBOT_SLASH_COMMAND", "slash_command"),
        description="the slash command that asks opsbot (Slack's, as in the app manifest, "
        "and Discord's application command)",
    )
    http_host: str = Field(
        "0.0.0.0",
        validation_alias=_env("OPSBOT_HTTP_HOST", "http_host"),
        description="address opsbot serve listens on: every interface by default, as a "
        "container needs; 127.0.0.1 keeps it to this machine",
    )
    http_port: int = Field(
        8080,
        validation_alias=_env("OPSBOT_HTTP_PORT", "http_port"),
        description="port opsbot serve listens on",
    )
    workers: int = Field(
        16,
        ge=1,
        validation_alias=_env("OPSBOT_WORKERS", "workers"),
        description="requests from chat events each adapter handles at once (its worker pool)",
    )
    queue_limit: int = Field(
        200,
        ge=0,
        validation_alias=_env("OPSBOT_QUEUE_LIMIT", "queue_limit"),
        description="chat requests that may wait for a worker; the next is told at once that "
        "the bot is busy and to ask again",
    )
    # -- several replicas of opsbot serve on one database ------------------------------------
    leader_election: Literal["auto", "lease", "postgres", "off"] = Field(
        "auto",
        validation_alias=_env("OPSBOT_LEADER_ELECTION", "leader_election"),
        description="how replicas choose the one that runs the singleton work (Discord "
        "gateway, expiry sweeps, rollout follow-ups, inventory): lease (a coordination.k8s.io "
        "Lease), postgres (an advisory lock), off (this process leads: one replica); auto: "
        "lease inside Kubernetes, postgres on PostgreSQL, else off",
    )
    lease_name: str = Field(
        "opsbot",
        pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
        validation_alias=_env("OPSBOT_LEASE_NAME", "lease_name"),
        description="the Lease (or the advisory lock's name) the replicas elect their leader by",
    )
    lease_namespace: str | None = Field(
        None,
        validation_alias=_env("OPSBOT_LEASE_NAMESPACE", "POD_NAMESPACE", "lease_namespace"),
        description="the Lease's namespace; unset: the service account's (in a pod)",
    )
    lease_duration: float = Field(
        15.0,
        ge=1,
        le=3600,
        validation_alias=_env("OPSBOT_LEASE_DURATION", "lease_duration"),
        description="seconds a leader's claim lasts unrenewed: how long another waits for a "
        "leader that died before taking over",
    )
    lease_renew_deadline: float = Field(
        10.0,
        gt=0,
        validation_alias=_env("OPSBOT_LEASE_RENEW_DEADLINE", "lease_renew_deadline"),
        description="seconds the leader keeps leading while it cannot renew (below "
        "OPSBOT_LEASE_DURATION, so it stops before another may start)",
    )
    lease_retry_period: float = Field(
        2.0,
        gt=0,
        validation_alias=_env("OPSBOT_LEASE_RETRY_PERIOD", "lease_retry_period"),
        description="seconds between attempts to take or renew the leadership (below "
        "OPSBOT_LEASE_RENEW_DEADLINE)",
    )
    shutdown_grace: float = Field(
        20.0,
        ge=0,
        validation_alias=_env("OPSBOT_SHUTDOWN_GRACE", "shutdown_grace"),
        description="seconds opsbot serve gives work in flight to finish after SIGTERM (keep "
        "it below the pod's terminationGracePeriodSeconds)",
    )
    execution_unknown_after: float = Field(
        300.0,
        gt=0,
        validation_alias=_env("OPSBOT_EXECUTION_UNKNOWN_AFTER", "execution_unknown_after"),
        description="seconds an approved action may stay executing before its outcome is "
        "reported unknown (the replica running it stopped)",
    )

    @field_validator("lease_renew_deadline")
    @classmethod
    def _renew_within_lease(cls, value: float, info: ValidationInfo) -> float:
        duration = info.data.get("lease_duration")
        if duration is not None and value >= duration:
            raise ValueError(
                f"must be less than OPSBOT_LEASE_DURATION ({duration:g}): a leader that "
                "cannot renew must stop before another replica may take over"
            )
        return value

    @field_validator("lease_retry_period")
    @classmethod
    def _retry_within_renew(cls, value: float, info: ValidationInfo) -> float:
        deadline = info.data.get("lease_renew_deadline")
        if deadline is not None and value >= deadline:
            raise ValueError(
                f"must be less than OPSBOT_LEASE_RENEW_DEADLINE ({deadline:g}), so the "
                "leader tries to renew more than once before it gives up"
            )
        return value

    alert_routes: list[AlertRoute] = Field(
        default_factory=list,
        validation_alias=_env("OPSBOT_ALERT_ROUTES", "alert_routes"),
        description="Alertmanager alerts -> channels by labels, first match wins: "
        '[{"matchers": {"severity": "critical", "team": "payments"}, "channel": "discord:123"}]',
    )
    alert_channel: str | None = Field(
        None,
        validation_alias=_env("OPSBOT_ALERT_CHANNEL", "alert_channel"),
        description="where alerts that no route matches open their thread "
        "(discord:<channel id> or slack:<channel id>)",
    )
    alertmanager_token: str | None = Field(
        None,
        validation_alias=_env("OPSBOT_ALERTMANAGER_TOKEN", "alertmanager_token"),
        description="bearer token /alertmanager wants (Alertmanager's http_config.authorization)",
    )
    alertmanager_username: str | None = Field(
        None,
        validation_alias=_env("OPSBOT_ALERTMANAGER_USERNAME", "alertmanager_username"),
        description="basic-auth user /alertmanager wants (Alertmanager's http_config.basic_auth)",
    )
    alertmanager_password: str | None = Field(
        None, validation_alias=_env("OPSBOT_ALERTMANAGER_PASSWORD", "alertmanager_password")
    )

    rollout_timeout: float = Field(
        300.0,
        validation_alias=_env("OPSBOT_ROLLOUT_TIMEOUT", "rollout_timeout"),
        description="seconds the bot follows a rollout after a write before reporting a timeout",
    )
    rollout_poll: float = Field(2.0, validation_alias=_env("OPSBOT_ROLLOUT_POLL", "rollout_poll"))

    backend_timeout: float = Field(
        10.0,
        validation_alias=_env("OPSBOT_BACKEND_TIMEOUT", "backend_timeout"),
        description="seconds before a Prometheus/Alertmanager/Loki call is abandoned",
    )
    chart_dir: Path = Field(Path("charts"), validation_alias=_env("OPSBOT_CHART_DIR", "chart_dir"))
    max_rows: int = Field(15, validation_alias=_env("OPSBOT_MAX_ROWS", "max_rows"))
    max_series: int = Field(8, validation_alias=_env("OPSBOT_MAX_SERIES", "max_series"))
    # -- the audit console (``/audit`` on ``opsbot serve``) and the audit log's upkeep -------
    console_token: str | None = Field(
        None,
        validation_alias=_env("OPSBOT_CONSOLE_TOKEN", "console_token"),
        description="bearer token that opens the audit console (also its login form); "
        "unset with no trusted proxy: the console is off",
    )
    console_token_subject: str = Field(
        "console:token",
        validation_alias=_env("OPSBOT_CONSOLE_TOKEN_SUBJECT", "console_token_subject"),
        description="the policy subject a holder of OPSBOT_CONSOLE_TOKEN is; it must be "
        "allowed audit.search",
    )
    console_trusted_proxies: str = Field(
        "",
        validation_alias=_env("OPSBOT_CONSOLE_TRUSTED_PROXIES", "console_trusted_proxies"),
        description="comma-separated addresses or networks (127.0.0.1, 10.0.0.0/8) of the "
        "authenticating proxy whose X-Forwarded-User/X-Forwarded-Groups are believed",
    )
    console_url: str | None = Field(
        None,
        validation_alias=_env("OPSBOT_CONSOLE_URL", "console_url"),
        description="the console's external URL (https://opsbot.example.com/audit), for links "
        "in chat answers",
    )
    console_session_hours: int = Field(
        8,
        validation_alias=_env("OPSBOT_CONSOLE_SESSION_HOURS", "console_session_hours"),
        description="hours a console login with the token lasts",
        ge=1,
        le=24 * 7,
    )
    console_slack_url: str = Field(
        "https://slack.com",
        validation_alias=_env("OPSBOT_CONSOLE_SLACK_URL", "console_slack_url"),
        description="the Slack workspace's URL (https://acme.slack.com), for links to threads",
    )
    console_discord_guild: str = Field(
        "",
        validation_alias=_env("OPSBOT_CONSOLE_DISCORD_GUILD", "console_discord_guild"),
        description="the Discord server (guild) id, for links to threads",
    )
    console_verify_interval: float = Field(
        30.0,
        validation_alias=_env("OPSBOT_CONSOLE_VERIFY_INTERVAL", "console_verify_interval"),
        description="seconds between the console's incremental chain checks (a full walk "
        "every 60 of them)",
        gt=0,
    )
    audit_anchor_path: Path | None = Field(
        None,
        validation_alias=_env("OPSBOT_AUDIT_ANCHOR_PATH", "audit_anchor_path"),
        description="file the audit chain's head is appended to at intervals (anchors that "
        "catch truncation); unset: no anchors",
    )
    audit_anchor_interval: float = Field(
        300.0,
        validation_alias=_env("OPSBOT_AUDIT_ANCHOR_INTERVAL", "audit_anchor_interval"),
        description="seconds between anchors",
        gt=0,
    )
    audit_anchor_key: str = Field(
        "",
        validation_alias=_env("OPSBOT_AUDIT_ANCHOR_KEY", "audit_anchor_key"),
        description="HMAC key signing each anchor line (a line that does not match is reported)",
    )
    audit_anchor_channel: str = Field(
        "",
        validation_alias=_env("OPSBOT_AUDIT_ANCHOR_CHANNEL", "audit_anchor_channel"),
        description="chat channel the leader posts each new anchor to (slack:C123, "
        "discord:123), through that platform's adapter; unset: anchors are not posted",
        pattern=r"^([a-z][a-z0-9_-]*:[^:\s]+)?$",
    )
    audit_retention_days: int | None = Field(
        None,
        validation_alias=_env("OPSBOT_AUDIT_RETENTION_DAYS", "audit_retention_days"),
        description="days audit records are kept; older ones are exported to "
        "OPSBOT_AUDIT_EXPORT_DIR, then removed; unset: kept forever",
        ge=1,
    )
    audit_export_dir: Path = Field(
        Path("audit-exports"),
        validation_alias=_env("OPSBOT_AUDIT_EXPORT_DIR", "audit_export_dir"),
        description="folder retention exports audit records to before removing them",
    )

    @field_validator("console_trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        for part in (p.strip() for p in value.split(",")):
            if part:
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError:
                    raise ValueError(
                        f"{part!r} is not an address or a network (e.g. 127.0.0.1, 10.0.0.0/8)"
                    ) from None
        return value

    #: settings of each backend by its name, winning over its environment variables
    #: (``backends: {loki: {url: ..., tenant: ...}}`` in opsbot.yaml; tests; the demo)
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=config_file()),
        )

    @field_validator("alert_channel")
    @classmethod
    def _alert_channel(cls, value: str | None) -> str | None:
        return chat_channel(value) if value else None

    @property
    def llm_configured(self) -> bool:
        return bool(self.openai_api_key or self.openai_base_url) and bool(self.llm_model)


def config_file() -> Path:
    """The settings file: ``OPSBOT_CONFIG``, else ``opsbot.yaml`` (read when it exists)."""
    return Path(os.environ.get("OPSBOT_CONFIG") or "opsbot.yaml")


def check_config_file() -> None:
    """Raise :class:`ConfigError` when ``OPSBOT_CONFIG`` names a file that does not exist,
    or the settings file is not YAML or not a mapping of settings."""
    file = config_file()
    if not file.is_file():
        if os.environ.get("OPSBOT_CONFIG"):
            raise ConfigError(
                f"OPSBOT_CONFIG names {file}, which is not a file",
                hint="fix the path, or unset OPSBOT_CONFIG to read ./opsbot.yaml when present",
            )
        return
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{file}{where}: not valid YAML: {reason}",
            hint=f"fix {file} (settings as `key: value` lines, e.g. `http_port: 8080`)",
        ) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"{file}: settings are a mapping of `key: value` lines, not a {type(data).__name__}",
            hint=f"fix {file}, e.g. `database_url: sqlite+aiosqlite:///opsbot.db`",
        )


def settings_error(exc: ValidationError, cls: type[BaseSettings], what: str = "") -> ConfigError:
    """A :class:`ConfigError` naming, for each setting of ``cls`` that does not validate, the
    environment variable (or settings-file key) it came from, its value and why; the hint says
    what the first one is for and its default. ``what`` names whose settings these are."""
    lines: list[str] = []
    hint = ""
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        name, where, field = _setting_named(cls, loc[0] if loc else "")
        value = error.get("input")
        shown = repr(value) if isinstance(value, str | int | float | bool) else "(its value)"
        path = ".".join([name, *loc[1:]])
        whose = f" ({what})" if what else ""
        lines.append(f"{path}={shown}{where}{whose}: {error['msg']}")
        if not hint:
            about = [str(field.description)] if field is not None and field.description else []
            default = field.get_default(call_default_factory=True) if field else None
            if field is not None and not field.is_required() and len(repr(default)) <= 40:
                about.append(f"default {default!r}")
            hint = f"fix or unset {name}" + (f" ({'; '.join(about)})" if about else "")
    return ConfigError("\n".join(lines), hint=hint)


def _setting_named(cls: type[BaseSettings], key: str) -> tuple[str, str, FieldInfo | None]:
    """The name the user set the setting pydantic calls ``key`` by, where (`` in
    opsbot.yaml`` or nothing for the environment), and its field: the environment variable
    when that is set, else its key in the settings file (or the variable, when neither)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    for field_name, info in cls.model_fields.items():
        alias = info.validation_alias
        aliases = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
        if key not in (field_name, *aliases):
            continue
        variables = [a for a in aliases if a.isupper()] or [(prefix + field_name).upper()]
        in_env = {name.upper() for name in os.environ}
        if found := next((v for v in variables if v in in_env), None):
            return found, "", info
        file = config_file()
        keys = [a.lower() for a in aliases] or [(prefix + field_name).lower()]
        written = _file_keys(file)
        if found := next((k for k in keys if k in written), None):
            return found, f" in {file}", info
        return variables[0], "", info
    return key, "", None


def _file_keys(file: Path) -> set[str]:
    try:
        data = yaml.safe_load(file.read_text()) if file.is_file() else None
    except (OSError, yaml.YAMLError):
        return set()
    return {str(k).lower() for k in data} if isinstance(data, dict) else set()


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment and ``opsbot.yaml``; ``overrides`` win over both.
    Raises :class:`ConfigError` for a missing ``OPSBOT_CONFIG`` file, a settings file that is
    not YAML, or a setting that does not validate."""
    check_config_file()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise settings_error(exc, Settings) from None
