"""Settings (pydantic-settings): environment first, then ``opsbot.yaml``, then defaults.

These are opsbot's own settings; each backend (``opsbot.skills.base.Backend``) reads its own
(``PROMETHEUS_URL``, ``KUBECONFIG``, ...) with its ``Config``. Variable names follow DESIGN.md ("Configuration"): the ecosystem's usual names where one
exists (``PROMETHEUS_URL``, ``OPENAI_API_KEY``, ``SLACK_BOT_TOKEN``), ``OPSBOT_*`` otherwise.
``opsbot.yaml`` (or the file named by ``OPSBOT_CONFIG``) may hold the same keys in lower case.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


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
    http_host: str = Field("0.0.0.0", validation_alias=_env("OPSBOT_HTTP_HOST", "http_host"))
    http_port: int = Field(8080, validation_alias=_env("OPSBOT_HTTP_PORT", "http_port"))

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
        yaml_file = Path(os.environ.get("OPSBOT_CONFIG", "opsbot.yaml"))
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file),
        )

    @property
    def llm_configured(self) -> bool:
        return bool(self.openai_api_key or self.openai_base_url) and bool(self.llm_model)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment and ``opsbot.yaml``; ``overrides`` win over both."""
    return Settings(**overrides)
