"""One conversation turn: store the message, build the context, stream the reply, store the answer."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field

from core.context import Budget, ContextMessage, context_window, select_context
from core.conversations import ConversationStore
from core.llm import ChatRequest, ErrorKind, LLMClient, Outcome, StreamEnd, TextDelta
from core.locks import KeyedLocks
from core.personas.model import Persona
from core.personas.service import PersonaService
from core.streaming import EditBudgets, RenderResult, ReplyRenderer
from core.surface import Surface
from core.tokens import count_message_tokens, encoding_name_for_model
from core.types import Author, ConversationKey

log = logging.getLogger("threadline.engine")

_STATUS_BY_OUTCOME: dict[Outcome, str] = {
    Outcome.COMPLETE: "complete",
    Outcome.NO_FINISH_REASON: "complete",
    Outcome.CUT_AT_LIMIT: "cut",
    Outcome.FILTERED: "filtered",
    Outcome.INTERRUPTED: "interrupted",
    Outcome.TIMEOUT_FIRST_TOKEN: "timeout",
    Outcome.TIMEOUT_BETWEEN_TOKENS: "timeout",
    Outcome.TIMEOUT_TOTAL: "timeout",
    Outcome.FAILED: "failed",
}
STOPPED_NOTICE = "⏹️ Stopped: the reply message was deleted."
INVALID_JSON_NOTICE = "⚠️ This reply is not valid JSON."


@dataclass(frozen=True, slots=True)
class Turn:
    key: ConversationKey
    author: Author
    text: str
    platform_message_id: str | None = None


@dataclass(slots=True)
class TurnResult:
    status: str
    text: str = ""
    message_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WindowSettings:
    default: int = 32_768
    overrides: Mapping[str, int] = field(default_factory=dict)


def user_content(author: Author, text: str) -> str:
    """How a person's message reaches the model: their name first, so several speakers stay apart."""
    return f"{author.name}: {text}" if author.name else text


class _Prepared:
    """What one attempt at the model needs, rebuilt with a smaller budget on a context-length error."""

    def __init__(self, persona: Persona, system: ContextMessage, newest: ContextMessage) -> None:
        self.persona = persona
        self.system = system
        self.newest = newest


class Engine:
    def __init__(
        self,
        *,
        conversations: ConversationStore,
        personas: PersonaService,
        llm: LLMClient,
        budgets: EditBudgets,
        windows: WindowSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conversations = conversations
        self._personas = personas
        self._llm = llm
        self._budgets = budgets
        self._windows = windows or WindowSettings()
        self._clock = clock
        self._locks = KeyedLocks()

    async def has_conversation(self, key: ConversationKey) -> bool:
        return await self._conversations.exists(key)

    async def reset_conversation(self, key: ConversationKey) -> bool:
        async with self._locks.hold(key):
            return await self._conversations.reset(key)

    async def handle_turn(self, turn: Turn, surface: Surface) -> TurnResult:
        renderer = ReplyRenderer(surface, self._budgets)
        # The placeholder goes out at once, even while an earlier turn of this conversation finishes.
        placeholder = asyncio.create_task(renderer.start())
        try:
            async with self._locks.hold(turn.key):
                return await self._run(turn, renderer, placeholder)
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("turn failed in %s (error id %s)", turn.key.describe(), error_id)
            result = await self._show_failure(
                renderer, placeholder, f"⚠️ Something went wrong on our side (error id {error_id})."
            )
            return TurnResult(status="failed", message_ids=result.message_ids if result else [])

    async def _run(self, turn: Turn, renderer: ReplyRenderer, placeholder: asyncio.Task[None]) -> TurnResult:
        started = self._clock()
        persona = (await self._personas.resolve(turn.key)).persona
        model = persona.model
        encoding = encoding_name_for_model(model)
        content = user_content(turn.author, turn.text)
        system = ContextMessage(
            "system", persona.system_prompt, count_message_tokens("system", persona.system_prompt, model)
        )
        newest = ContextMessage("user", content, count_message_tokens("user", content, model))
        budget = Budget.for_window(
            context_window(model, persona.context_window, self._windows.overrides, self._windows.default),
            persona.max_tokens,
        )
        conversation_id, history_start = await self._conversations.open(turn.key)
        base = {"author_id": turn.author.id, "author_name": turn.author.name, "token_encoding": encoding}

        if system.tokens + newest.tokens > budget.prompt_tokens:
            return await self._refuse_too_long(
                turn, renderer, placeholder, conversation_id, base, newest, system, budget, persona
            )

        user_id = await self._conversations.add_message(
            conversation_id,
            role="user",
            content=content,
            token_count=newest.tokens,
            status="complete",
            source_message_id=turn.platform_message_id,
            **base,
        )
        await placeholder
        reply_id = await self._conversations.add_message(
            conversation_id,
            role="assistant",
            content="",
            token_count=0,
            status="streaming",
            model=model,
            persona_name=persona.name,
            platform_message_ids=renderer.message_ids,
            **{**base, "author_id": "", "author_name": persona.name},
        )
        prepared = _Prepared(persona, system, newest)
        text, end, first_token_at, stopped = await self._stream(
            prepared, renderer, conversation_id, history_start, user_id, budget, encoding
        )
        return await self._finish(
            renderer, reply_id, persona, text, end, started, first_token_at, stopped, encoding
        )

    async def _stream(
        self,
        prepared: _Prepared,
        renderer: ReplyRenderer,
        conversation_id: int,
        history_start: int,
        user_id: int,
        budget: Budget,
        encoding: str,
    ) -> tuple[str, StreamEnd | None, float | None, bool]:
        persona = prepared.persona
        for attempt in range(2):
            messages = await self._context(
                prepared, conversation_id, history_start, user_id, budget, encoding
            )
            request = ChatRequest(
                model=persona.model,
                messages=messages,
                temperature=persona.temperature,
                top_p=persona.top_p,
                max_tokens=persona.max_tokens,
                json_mode=persona.json_mode,
            )
            chunks: list[str] = []
            end: StreamEnd | None = None
            first_token_at: float | None = None
            stopped = False
            async with aclosing(self._llm.stream(request)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        if first_token_at is None:
                            first_token_at = self._clock()
                            if persona.json_mode:
                                renderer.push("```json\n")
                        chunks.append(event.text)
                        renderer.push(event.text)
                        if renderer.gone:
                            stopped = True
                            break
                    else:
                        end = event
            retry_shorter = (
                attempt == 0
                and not chunks
                and end is not None
                and end.error is not None
                and end.error.kind is ErrorKind.CONTEXT_TOO_LONG
            )
            if not retry_shorter:
                return "".join(chunks), end, first_token_at, stopped
            log.info("provider said the context is too long; retrying once with half the history budget")
            budget = budget.shrunk()
        raise AssertionError("unreachable")

    async def _context(
        self,
        prepared: _Prepared,
        conversation_id: int,
        history_start: int,
        user_id: int,
        budget: Budget,
        encoding: str,
    ) -> list[dict[str, str]]:
        limit = prepared.persona.history_limit
        room = budget.prompt_tokens - prepared.system.tokens - prepared.newest.tokens
        history: list[ContextMessage] = []
        used = 0
        async for batch in self._conversations.history(conversation_id, history_start, user_id):
            for item in batch:
                tokens = item.token_count
                if item.token_encoding != encoding:  # the channel changed model family since
                    tokens = count_message_tokens(item.role, item.content, prepared.persona.model)
                history.append(ContextMessage(item.role, item.content, tokens))
                used += tokens
            if used > room or (limit is not None and len(history) >= limit):
                break
        context = select_context(prepared.system, prepared.newest, history, budget.prompt_tokens, limit)
        return context.messages

    async def _finish(
        self,
        renderer: ReplyRenderer,
        reply_id: int,
        persona: Persona,
        text: str,
        end: StreamEnd | None,
        started: float,
        first_token_at: float | None,
        stopped: bool,
        encoding: str,
    ) -> TurnResult:
        outcome = end.outcome if end else Outcome.INTERRUPTED
        status = "stopped" if stopped else _STATUS_BY_OUTCOME[outcome]
        notices = [STOPPED_NOTICE] if stopped else ([end.notice] if end and end.notice else [])
        if persona.json_mode and text and status == "complete" and not _is_json(text):
            notices.append(INVALID_JSON_NOTICE)
        error = end.error if end else None
        if not text:
            status = "failed"
            message = (
                error.message if error else (notices[0] if notices else "⚠️ The model sent an empty reply.")
            )
            result = await renderer.fail(message)
        else:
            if persona.json_mode:
                renderer.push("\n```")
            result = await renderer.finish("\n".join(notices) or None)
        usage = end.usage if end else None
        now = self._clock()
        await self._conversations.update_message(
            reply_id,
            content=text,
            token_count=count_message_tokens("assistant", text, persona.model) if text else 0,
            status=status,
            finish_reason=end.finish_reason if end else None,
            model=(end.model if end and end.model else persona.model),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            latency_ms=round((now - started) * 1000),
            first_token_ms=round((first_token_at - started) * 1000) if first_token_at else None,
            error_kind=error.kind.value if error else None,
            error_id=error.error_id if error else None,
            platform_message_ids=result.message_ids,
            token_encoding=encoding,
        )
        return TurnResult(status=status, text=text, message_ids=result.message_ids)

    async def _refuse_too_long(
        self,
        turn: Turn,
        renderer: ReplyRenderer,
        placeholder: asyncio.Task[None],
        conversation_id: int,
        base: dict[str, str],
        newest: ContextMessage,
        system: ContextMessage,
        budget: Budget,
        persona: Persona,
    ) -> TurnResult:
        limit = budget.prompt_tokens - system.tokens
        message = (
            f"⚠️ Your message is {newest.tokens:,} tokens long; {persona.model} with this persona accepts "
            f"at most {max(limit, 0):,} tokens per message. Please shorten it or split it up."
        )
        await self._conversations.add_message(
            conversation_id,
            role="user",
            content=newest.content,
            token_count=newest.tokens,
            status="refused",
            source_message_id=turn.platform_message_id,
            **base,
        )
        await placeholder
        result = await renderer.fail(message)
        await self._conversations.add_message(
            conversation_id,
            role="assistant",
            content=message,
            token_count=0,
            status="refused",
            persona_name=persona.name,
            platform_message_ids=result.message_ids,
            **{**base, "author_id": "", "author_name": persona.name},
        )
        return TurnResult(status="refused", text=message, message_ids=result.message_ids)

    @staticmethod
    async def _show_failure(
        renderer: ReplyRenderer, placeholder: asyncio.Task[None], message: str
    ) -> RenderResult | None:
        try:
            await placeholder
            return await renderer.fail(message)
        except Exception:  # the platform itself is failing: the log is all that is left
            log.exception("could not show the failure note")
            return None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
