"""One conversation turn: store the message, build the context, stream the reply, store the answer."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core import metrics
from core.context import Budget, ContextMessage, context_window, select_context
from core.conversations import ConversationStore, HistoryItem
from core.leases import ConversationLeases, HeldLease
from core.llm import ChatRequest, ErrorKind, LLMClient, Outcome, StreamEnd, TextDelta
from core.locks import KeyedLocks
from core.personas.model import Persona
from core.personas.service import PersonaService
from core.streaming import EditBudgets, RenderResult, ReplyRenderer
from core.surface import Surface
from core.tokens import BOUND_ENCODING, count_message_tokens, encoding_name_for_model, message_token_bound
from core.types import Author, ConversationKey
from core.usage import Quotas, UsageService, quota_refusal

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
EMPTY_MESSAGE_REPLY = "👋 I'm here. Write your question in the same message as the mention."
CHECKPOINT_SECONDS = 2.0  # how often a streaming reply's text is saved, for crash recovery
MAX_READ_INTERVAL = 1.0  # s: the longest a reply's end can go unseen (see _read_interval)
SHUTDOWN_NOTICE = "⚠️ Threadline restarted while writing this reply, so it is incomplete."


@dataclass(frozen=True, slots=True)
class Turn:
    key: ConversationKey
    author: Author
    text: str
    platform_message_id: str | None = None
    received_at: float | None = None  # time.monotonic() when the platform event arrived


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


@dataclass(slots=True)
class _Run:
    """The state of one turn while it runs."""

    turn: Turn
    renderer: ReplyRenderer
    placeholder: asyncio.Task[None]
    started: float
    persona: Persona
    encoding: str
    system: ContextMessage
    newest: ContextMessage
    budget: Budget
    conversation_id: int = 0
    history_start: int = 0
    user_id: int = 0
    reply_id: int = 0
    lease: HeldLease | None = None  # released with the reply's final update
    history: Sequence[HistoryItem] | None = None  # the newest batch, read with the conversation's opening
    first_token_at: float | None = None
    chunks: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.persona.model

    def exact(self, message: ContextMessage) -> ContextMessage:
        """`message` with its exact token count (loads the model's tokenizer)."""
        if message.exact:
            return message
        tokens = count_message_tokens(message.role, message.content, self.model)
        return ContextMessage(message.role, message.content, tokens)

    def encoding_of(self, message: ContextMessage) -> str:
        return self.encoding if message.exact else BOUND_ENCODING


class Engine:
    def __init__(
        self,
        *,
        conversations: ConversationStore,
        personas: PersonaService,
        llm: LLMClient,
        budgets: EditBudgets,
        leases: ConversationLeases,
        usage: UsageService,
        quotas: Quotas | None = None,
        windows: WindowSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conversations = conversations
        self._personas = personas
        self._llm = llm
        self._budgets = budgets
        self._leases = leases
        self._usage = usage
        self._quotas = quotas or Quotas()
        self._windows = windows or WindowSettings()
        self._clock = clock
        self._locks = KeyedLocks()
        self._in_flight: set[asyncio.Task[TurnResult]] = set()

    @property
    def turns_in_flight(self) -> int:
        return len(self._in_flight)

    async def drain(self, grace: float) -> None:
        """Let turns in flight finish within `grace` seconds; stop the rest with a visible note."""
        pending = set(self._in_flight)
        if not pending:
            return
        log.info("waiting up to %.0f s for %d replies in flight", grace, len(pending))
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            log.warning("stopping %d replies still streaming after the grace period", len(late))
            await asyncio.wait(late, timeout=10)

    async def has_conversation(self, key: ConversationKey) -> bool:
        return await self._conversations.exists(key)

    async def reset_conversation(self, key: ConversationKey) -> bool:
        async with self._locks.hold(key):
            return await self._conversations.reset(key)

    async def handle_turn(self, turn: Turn, surface: Surface) -> TurnResult:
        started = turn.received_at if turn.received_at is not None else self._clock()
        measured = metrics.MeasuredSurface(surface, turn.key.platform, started, self._clock)
        renderer = ReplyRenderer(measured, self._budgets)
        # The placeholder goes out at once, even while an earlier turn of this conversation finishes.
        placeholder = asyncio.create_task(renderer.start())
        task = asyncio.current_task()
        gauge = metrics.STREAMS_IN_FLIGHT.labels(turn.key.platform)
        gauge.inc()
        if task is not None:
            self._in_flight.add(task)
        try:
            # Let it send its request before this turn's database work: one yield to start it, one
            # more for aiohttp, which writes a request's body in a task of its own before Python 3.12.
            for _ in range(2):
                await asyncio.sleep(0)
            async with self._locks.hold(turn.key):
                result = await self._run(turn, renderer, placeholder, started)
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("turn failed in %s (error id %s)", turn.key.describe(), error_id)
            shown = await self._show_failure(
                renderer, placeholder, f"⚠️ Something went wrong on our side (error id {error_id})."
            )
            result = TurnResult(status="failed", message_ids=shown.message_ids if shown else [])
        finally:
            gauge.dec()
            if task is not None:
                self._in_flight.discard(task)
        metrics.TURNS.labels(turn.key.platform, result.status).inc()
        metrics.REPLY_TIME.labels(turn.key.platform).observe(self._clock() - started)
        return result

    async def _run(
        self, turn: Turn, renderer: ReplyRenderer, placeholder: asyncio.Task[None], started: float
    ) -> TurnResult:
        persona = (await self._personas.resolve(turn.key)).persona
        model = persona.model
        content = user_content(turn.author, turn.text)
        # Token counts start as free upper bounds; they are made exact only when a bound does not fit.
        run = _Run(
            turn=turn,
            renderer=renderer,
            placeholder=placeholder,
            started=started,
            persona=persona,
            encoding=encoding_name_for_model(model),
            system=_bounded("system", persona.system_prompt),
            newest=_bounded("user", content),
            budget=Budget.for_window(
                context_window(model, persona.context_window, self._windows.overrides, self._windows.default),
                persona.max_tokens,
            ),
        )
        refusal = await self._refusal(run)
        message = self._user_message(run, "refused" if refusal else "complete")
        owner = self._leases.new_owner()
        # The common case in one transaction: open the conversation, take its lease, store the message.
        opened = await self._conversations.open(
            turn.key, functools.partial(self._leases.take, owner=owner), message, with_history=refusal is None
        )
        run.conversation_id, run.history_start = opened.conversation_id, opened.history_start
        run.history = opened.history
        async with self._leases.hold(run.conversation_id, owner=owner, taken=opened.lease_taken) as lease:
            run.lease = lease
            if opened.message_id is not None:
                run.user_id = opened.message_id
            else:  # the lease was busy: the message goes in once it is ours
                run.user_id = await self._conversations.add_message(run.conversation_id, **message)
            if refusal is not None:
                return await self._refuse(run, refusal)
            return await self._answer(run)

    async def _refusal(self, run: _Run) -> str | None:
        if not run.turn.text.strip():
            return EMPTY_MESSAGE_REPLY
        if run.system.tokens + run.newest.tokens > run.budget.prompt_tokens:
            run.system, run.newest = run.exact(run.system), run.exact(run.newest)
        if run.system.tokens + run.newest.tokens > run.budget.prompt_tokens:
            limit = max(run.budget.prompt_tokens - run.system.tokens, 0)
            return (
                f"⚠️ Your message is {run.newest.tokens:,} tokens long; {run.model} with this persona "
                f"accepts at most {limit:,} tokens per message. Please shorten it or split it up."
            )
        if not self._quotas.enabled:
            return None
        key = run.turn.key
        return await quota_refusal(
            self._usage,
            self._quotas,
            key.platform,
            key.workspace,
            key.channel,
            run.turn.author.id,
            datetime.now(UTC),
        )

    @staticmethod
    def _user_message(run: _Run, status: str) -> dict[str, Any]:
        author = run.turn.author
        return {
            "role": "user",
            "content": run.newest.content,
            "token_count": run.newest.tokens,
            "status": status,
            "author_id": author.id,
            "author_name": author.name,
            "source_message_id": run.turn.platform_message_id,
            "requested_by": author.id,
            "token_encoding": run.encoding_of(run.newest),
        }

    async def _answer(self, run: _Run) -> TurnResult:
        await run.placeholder
        run.reply_id = await self._conversations.add_message(
            run.conversation_id,
            role="assistant",
            content="",
            token_count=0,
            status="streaming",
            model=run.model,
            persona_name=run.persona.name,
            author_name=run.persona.name,
            platform_message_ids=run.renderer.message_ids,
            requested_by=run.turn.author.id,
            token_encoding=BOUND_ENCODING,
        )
        try:
            text, end, stopped = await self._stream(run)
        except asyncio.CancelledError:
            await self._finish_on_shutdown(run)
            raise
        return await self._finish(run, text, end, stopped)

    async def _finish_on_shutdown(self, run: _Run) -> None:
        """Cancelled (shutdown after the grace period): deliver what was produced, with a note."""
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        end = StreamEnd(outcome=Outcome.INTERRUPTED, notice=SHUTDOWN_NOTICE)
        try:
            await asyncio.wait_for(self._finish(run, "".join(run.chunks), end, False), timeout=10)
        except Exception:
            log.exception("could not finalise an interrupted reply at shutdown")

    async def _stream(self, run: _Run) -> tuple[str, StreamEnd | None, bool]:
        persona = run.persona
        budget = run.budget
        for attempt in range(2):
            request = ChatRequest(
                model=persona.model,
                messages=await self._context(run, budget),
                temperature=persona.temperature,
                top_p=persona.top_p,
                max_tokens=persona.max_tokens,
                json_mode=persona.json_mode,
            )
            chunks = run.chunks = []
            end: StreamEnd | None = None
            stopped = False
            checkpoint = self._clock()
            async with aclosing(
                self._llm.stream(request, functools.partial(self._read_interval, run))
            ) as events:
                async for event in events:
                    if not isinstance(event, TextDelta):
                        end = event
                        continue
                    if run.first_token_at is None:
                        run.first_token_at = self._clock()
                        if persona.json_mode:
                            run.renderer.push("```json\n")
                    chunks.append(event.text)
                    run.renderer.push(event.text)
                    if run.renderer.gone:
                        stopped = True
                        break
                    if self._clock() - checkpoint >= CHECKPOINT_SECONDS:
                        checkpoint = self._clock()
                        await self._checkpoint(run, chunks)
            retry_shorter = (
                attempt == 0
                and not chunks
                and end is not None
                and end.error is not None
                and end.error.kind is ErrorKind.CONTEXT_TOO_LONG
            )
            if not retry_shorter:
                return "".join(chunks), end, stopped
            log.info("provider said the context is too long; retrying once with half the history budget")
            budget = budget.shrunk()
        raise AssertionError("unreachable")

    def _read_interval(self, run: _Run) -> float:
        """How long reads of the model's stream are held (see LLMClient.stream).

        Text read more often than the platform shows an edit waits for the edit anyway. A reply
        streaming alone reads once per edit interval, just before its edit (both count from the first
        words), and the process sleeps in between: each wake-up of an idle process costs as much CPU as
        the chunks it handles (bench/README.md). With other replies in flight, wake-ups are shared, and
        an end seen late delays final edits that queue for the platform's budgets: twice per interval.
        """
        interval = min(run.renderer.edit_interval, MAX_READ_INTERVAL)
        return interval if len(self._in_flight) <= 1 else interval / 2

    async def _checkpoint(self, run: _Run, chunks: list[str]) -> None:
        text = "".join(chunks)
        chunks[:] = [text]
        await self._conversations.update_message(
            run.reply_id, content=text, platform_message_ids=run.renderer.message_ids
        )

    async def _context(self, run: _Run, budget: Budget) -> list[dict[str, str]]:
        """The newest history that fits, counted exactly only once upper bounds no longer fit."""
        limit = run.persona.history_limit
        history: list[ContextMessage] = []
        used = 0
        exact = False
        batches = self._conversations.history(
            run.conversation_id, run.history_start, run.user_id, run.history
        )
        async for batch in batches:
            for item in batch:
                message = self._history_message(
                    run, item.role, item.content, item.token_count, item.token_encoding
                )
                history.append(run.exact(message) if exact else message)
                used += history[-1].tokens
            room = budget.prompt_tokens - run.system.tokens - run.newest.tokens
            if used > room and not exact:
                exact = True
                run.system, run.newest = run.exact(run.system), run.exact(run.newest)
                history = [run.exact(message) for message in history]
                used = sum(message.tokens for message in history)
                room = budget.prompt_tokens - run.system.tokens - run.newest.tokens
            if used > room or (limit is not None and len(history) >= limit):
                break
        return select_context(run.system, run.newest, history, budget.prompt_tokens, limit).messages

    @staticmethod
    def _history_message(run: _Run, role: str, content: str, tokens: int, encoding: str) -> ContextMessage:
        if encoding == run.encoding:
            return ContextMessage(role, content, tokens)
        if encoding == BOUND_ENCODING:
            return ContextMessage(role, content, tokens, exact=False)
        return _bounded(role, content)  # counted for another model family: its count says nothing

    async def _finish(self, run: _Run, text: str, end: StreamEnd | None, stopped: bool) -> TurnResult:
        persona = run.persona
        outcome = end.outcome if end else Outcome.INTERRUPTED
        status = "stopped" if stopped else _STATUS_BY_OUTCOME[outcome]
        notices = [STOPPED_NOTICE] if stopped else ([end.notice] if end and end.notice else [])
        if persona.json_mode and text and status == "complete" and not _is_json(text):
            notices.append(INVALID_JSON_NOTICE)
        error = end.error if end else None
        if error is not None:
            metrics.LLM_ERRORS.labels(error.kind.value).inc()
        if not text:
            status = "failed"
            message = (
                error.message if error else (notices[0] if notices else "⚠️ The model sent an empty reply.")
            )
            result = await run.renderer.fail(message)
        else:
            if persona.json_mode:
                run.renderer.push("\n```")
            result = await run.renderer.finish("\n".join(notices) or None)
        usage = end.usage if end else None
        model = end.model if end and end.model else persona.model
        if usage is not None:
            metrics.TOKENS.labels(model, "in").inc(usage.prompt_tokens)
            metrics.TOKENS.labels(model, "out").inc(usage.completion_tokens)
        now = self._clock()
        await self._conversations.update_message(
            run.reply_id,
            also=run.lease.release() if run.lease else None,
            content=text,
            token_count=message_token_bound("assistant", text) if text else 0,
            token_encoding=BOUND_ENCODING,
            status=status,
            finish_reason=end.finish_reason if end else None,
            model=model,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            latency_ms=round((now - run.started) * 1000),
            first_token_ms=round((run.first_token_at - run.started) * 1000) if run.first_token_at else None,
            error_kind=error.kind.value if error else None,
            error_id=error.error_id if error else None,
            platform_message_ids=result.message_ids,
        )
        if run.lease:
            run.lease.released = True
        return TurnResult(status=status, text=text, message_ids=result.message_ids)

    async def _refuse(self, run: _Run, message: str) -> TurnResult:
        """Answer without calling the model (message too long, quota used up); keep it out of the history."""
        await run.placeholder
        result = await run.renderer.fail(message)
        await self._conversations.add_message(
            run.conversation_id,
            role="assistant",
            content=message,
            token_count=0,
            status="refused",
            persona_name=run.persona.name,
            author_name=run.persona.name,
            platform_message_ids=result.message_ids,
            requested_by=run.turn.author.id,
            token_encoding=BOUND_ENCODING,
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


def _bounded(role: str, content: str) -> ContextMessage:
    """A message counted by its free upper bound (see core.tokens.message_token_bound)."""
    return ContextMessage(role, content, message_token_bound(role, content), exact=False)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
