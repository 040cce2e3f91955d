"""The core services, built once per process and handed to every adapter."""

from __future__ import annotations

from dataclasses import dataclass

from core.channels import ChannelSettingsService
from core.config import Settings
from core.conversations import ConversationStore
from core.dedup import ProcessedEvents
from core.engine import Engine, WindowSettings
from core.leases import ConversationLeases
from core.llm import LLMClient, LLMTimeouts, RetryPolicy
from core.personas.service import PersonaService
from core.schedules import ScheduleService
from core.storage.database import Database
from core.storage.migrate import upgrade_if_needed
from core.streaming import EditBudgets
from core.usage import Prices, Quotas, UsageService


def llm_client(settings: Settings) -> LLMClient:
    # Local servers (Ollama, vLLM, LM Studio) need no key; api.openai.com does.
    api_key = settings.openai_api_key or ("not-needed" if settings.openai_base_url else None)
    return LLMClient(
        api_key=api_key,
        base_url=settings.openai_base_url,
        timeouts=LLMTimeouts(
            first_token=settings.llm_first_token_timeout,
            between_tokens=settings.llm_between_tokens_timeout,
            total=settings.llm_total_timeout,
        ),
        retry=RetryPolicy(max_attempts=settings.llm_max_attempts),
    )


@dataclass(slots=True)
class Core:
    settings: Settings
    db: Database
    engine: Engine
    personas: PersonaService
    channels: ChannelSettingsService
    events: ProcessedEvents
    conversations: ConversationStore
    budgets: EditBudgets
    llm: LLMClient
    usage: UsageService
    schedules: ScheduleService

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> Core:
        """Connect, upgrade the schema (in this process, only when not at head), seed the personas.

        `threadline run` passes migrate=False: it has upgraded in a child process already.
        """
        db = Database(settings.database_url)
        try:
            if migrate:
                await upgrade_if_needed(db)
            personas = PersonaService(db, settings.default_model)
            await personas.seed_builtins()
        except BaseException:
            await db.aclose()
            raise
        conversations = ConversationStore(db)
        budgets = EditBudgets()
        llm = llm_client(settings)
        usage = UsageService(db, Prices.with_overrides(settings.model_prices))
        engine = Engine(
            conversations=conversations,
            personas=personas,
            llm=llm,
            budgets=budgets,
            leases=ConversationLeases(db, lease_seconds=settings.lease_seconds),
            usage=usage,
            quotas=Quotas(settings.daily_tokens_per_user, settings.daily_tokens_per_channel),
            windows=WindowSettings(default=settings.default_context_window, overrides=settings.model_windows),
        )
        return cls(
            settings=settings,
            db=db,
            engine=engine,
            personas=personas,
            channels=ChannelSettingsService(db),
            events=ProcessedEvents(db),
            conversations=conversations,
            budgets=budgets,
            llm=llm,
            usage=usage,
            schedules=ScheduleService(db),
        )

    async def aclose(self) -> None:
        await self.llm.aclose()
        await self.db.aclose()
