"""Settings from the environment (and a `.env` file), validated once at start-up.

A bad value stops the program with one line naming the variable (see `bots.cli`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConfigError(Exception):
    """A setting has a value the program cannot use; the message names the variable."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def async_database_url(url: str) -> str:
    """Map the URLs people paste (postgres://, postgresql://) onto the async drivers."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url.removeprefix("postgresql://")
    if url.startswith("postgresql+psycopg2://") or url.startswith("postgresql+psycopg://"):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    database_url: str = Field(
        default_factory=lambda: f"sqlite+aiosqlite:///{Path.cwd() / 'threadline.db'}",
        validation_alias="DATABASE_URL",
    )
    openai_api_key: str | None = Field(default=None, validation_alias="OPENAI_API_KEY", repr=False)
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    default_model: str = Field(
        default="gpt-4o-mini", validation_alias="THREADLINE_DEFAULT_MODEL", min_length=1
    )

    llm_first_token_timeout: float = Field(
        default=60.0, gt=0, validation_alias="THREADLINE_LLM_FIRST_TOKEN_TIMEOUT"
    )
    llm_between_tokens_timeout: float = Field(
        default=30.0, gt=0, validation_alias="THREADLINE_LLM_BETWEEN_TOKENS_TIMEOUT"
    )
    llm_total_timeout: float = Field(default=300.0, gt=0, validation_alias="THREADLINE_LLM_TOTAL_TIMEOUT")
    llm_max_attempts: int = Field(default=4, ge=1, le=10, validation_alias="THREADLINE_LLM_MAX_ATTEMPTS")
    default_context_window: int = Field(
        default=32_768, ge=1024, validation_alias="THREADLINE_DEFAULT_CONTEXT_WINDOW"
    )
    model_windows: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict, validation_alias="THREADLINE_MODEL_CONTEXT_WINDOWS"
    )

    slack_bot_token: str | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN", repr=False)
    slack_app_token: str | None = Field(default=None, validation_alias="SLACK_APP_TOKEN", repr=False)
    slack_signing_secret: str | None = Field(
        default=None, validation_alias="SLACK_SIGNING_SECRET", repr=False
    )
    slack_api_url: str = Field(default="https://slack.com/api/", validation_alias="SLACK_API_URL")
    slack_persona_command: str = Field(
        default="/persona", validation_alias="THREADLINE_SLACK_PERSONA_COMMAND"
    )
    slack_usage_command: str = Field(default="/usage", validation_alias="THREADLINE_SLACK_USAGE_COMMAND")
    slack_schedule_command: str = Field(
        default="/schedule", validation_alias="THREADLINE_SLACK_SCHEDULE_COMMAND"
    )
    slack_edit_interval: float | None = Field(
        default=None, ge=0, validation_alias="THREADLINE_SLACK_EDIT_INTERVAL"
    )

    discord_token: str | None = Field(default=None, validation_alias="DISCORD_TOKEN", repr=False)
    discord_api_url: str = Field(default="https://discord.com/api/v10", validation_alias="DISCORD_API_URL")
    discord_gateway_url: str | None = Field(default=None, validation_alias="DISCORD_GATEWAY_URL")
    discord_message_content: bool = Field(
        default=False, validation_alias="THREADLINE_DISCORD_MESSAGE_CONTENT"
    )
    discord_shard_count: int | None = Field(
        default=None, ge=1, validation_alias="THREADLINE_DISCORD_SHARD_COUNT"
    )
    discord_shard_ids: Annotated[list[int] | None, NoDecode] = Field(
        default=None, validation_alias="THREADLINE_DISCORD_SHARD_IDS"
    )
    discord_dev_guild_id: int | None = Field(default=None, validation_alias="THREADLINE_DISCORD_DEV_GUILD_ID")
    discord_edit_interval: float | None = Field(
        default=None, ge=0, validation_alias="THREADLINE_DISCORD_EDIT_INTERVAL"
    )

    model_prices: Annotated[dict[str, tuple[float, float]], NoDecode] = Field(
        default_factory=dict, validation_alias="THREADLINE_MODEL_PRICES"
    )
    daily_tokens_per_user: int | None = Field(
        default=None, ge=1, validation_alias="THREADLINE_DAILY_TOKENS_PER_USER"
    )
    daily_tokens_per_channel: int | None = Field(
        default=None, ge=1, validation_alias="THREADLINE_DAILY_TOKENS_PER_CHANNEL"
    )
    retention_days: int = Field(default=0, ge=0, validation_alias="THREADLINE_RETENTION_DAYS")
    dedup_ttl_hours: int = Field(default=24, ge=1, validation_alias="THREADLINE_DEDUP_TTL_HOURS")
    shutdown_grace: float = Field(default=20.0, ge=0, validation_alias="THREADLINE_SHUTDOWN_GRACE")
    recovery_after_seconds: float = Field(
        default=90.0, ge=0, validation_alias="THREADLINE_RECOVERY_AFTER_SECONDS"
    )
    lease_seconds: float = Field(default=60.0, ge=1, validation_alias="THREADLINE_LEASE_SECONDS")

    host: str = Field(default="0.0.0.0", validation_alias="THREADLINE_HOST")
    port: int = Field(default=3000, ge=0, le=65535, validation_alias="THREADLINE_PORT")
    admins: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="THREADLINE_ADMINS")
    log_level: str = Field(default="INFO", validation_alias="THREADLINE_LOG_LEVEL")
    log_format: str = Field(default="text", validation_alias="THREADLINE_LOG_FORMAT", pattern="^(text|json)$")

    @field_validator("admins", mode="before")
    @classmethod
    def _admins(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("model_windows", mode="before")
    @classmethod
    def _model_windows(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        windows: dict[str, int] = {}
        for item in _split_csv(value):
            model, sep, tokens = item.rpartition("=")
            if not sep or not model.strip() or not tokens.strip().isdigit():
                raise ValueError("expected model=tokens pairs separated by commas, e.g. llama3=8192")
            windows[model.strip()] = int(tokens)
        return windows

    @field_validator("model_prices", mode="before")
    @classmethod
    def _model_prices(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        prices: dict[str, tuple[float, float]] = {}
        for item in _split_csv(value):
            model, sep, pair = item.rpartition("=")
            prompt, slash, completion = pair.partition("/")
            try:
                prices[model.strip()] = (float(prompt), float(completion))
            except ValueError:
                raise ValueError(
                    "expected model=input/output USD per million tokens, e.g. gpt-4o=2.5/10"
                ) from None
            if not sep or not slash or not model.strip():
                raise ValueError("expected model=input/output USD per million tokens, e.g. gpt-4o=2.5/10")
        return prices

    @field_validator("daily_tokens_per_user", "daily_tokens_per_channel", mode="before")
    @classmethod
    def _zero_is_off(cls, value: Any) -> Any:
        return None if value in ("", "0", 0) else value

    @field_validator("discord_shard_ids", mode="before")
    @classmethod
    def _shard_ids(cls, value: Any) -> Any:
        if value in ("", None):
            return None
        return _split_csv(value)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        mapped = async_database_url(value.strip())
        if not mapped.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return mapped

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @model_validator(mode="after")
    def _shards(self) -> Settings:
        if self.discord_shard_ids and not self.discord_shard_count:
            raise ValueError("THREADLINE_DISCORD_SHARD_IDS needs THREADLINE_DISCORD_SHARD_COUNT")
        if self.discord_shard_ids and self.discord_shard_count:
            wrong = [i for i in self.discord_shard_ids if not 0 <= i < self.discord_shard_count]
            if wrong:
                raise ValueError(
                    f"THREADLINE_DISCORD_SHARD_IDS: shard ids must be below the shard count "
                    f"{self.discord_shard_count} (got {wrong})"
                )
        return self

    def is_admin(self, user_id: str) -> bool:
        return user_id in self.admins

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token)

    @property
    def discord_enabled(self) -> bool:
        return bool(self.discord_token)


def _variable_name(settings_cls: type[BaseSettings], field: str) -> str:
    info = settings_cls.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning a validation failure into one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if not first["loc"]:  # a check across fields names its variables itself
            raise ConfigError(message) from None
        name = _variable_name(Settings, str(first["loc"][0]))
        raise ConfigError(f"{name}: {message}") from None
