"""Who a Slack user is: display names (cached) and workspace-admin status (asked fresh)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("threadline.slack")

NAME_TTL = 3600.0  # seconds a display name is reused before users.info is asked again
CACHE_SIZE = 2048


def display_name(user: dict[str, Any]) -> str:
    profile = user.get("profile") or {}
    for candidate in (
        profile.get("display_name"),
        profile.get("real_name"),
        user.get("real_name"),
        user.get("name"),
    ):
        if candidate and str(candidate).strip():
            return str(candidate).strip()
    return str(user.get("id", ""))


class UserDirectory:
    def __init__(self, client: AsyncWebClient, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._names: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._looking_up: dict[str, asyncio.Task[dict[str, Any] | None]] = {}

    async def _info(self, user_id: str) -> dict[str, Any] | None:
        try:
            response = await self._client.users_info(user=user_id)
        except SlackApiError as exc:
            log.warning("users.info for %s failed: %s", user_id, exc.response.get("error"))
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("users.info for %s failed: %s", user_id, type(exc).__name__)
            return None
        user = response.get("user")
        return user if isinstance(user, dict) else None

    async def name(self, user_id: str) -> str:
        """The name people see for `user_id`; the id itself when Slack cannot tell."""
        cached = self._names.get(user_id)
        if cached is not None and cached[1] > self._clock():
            self._names.move_to_end(user_id)
            return cached[0]
        user = await self._shared_info(user_id)
        if user is None:
            return cached[0] if cached is not None else user_id
        name = display_name(user)
        self._names[user_id] = (name, self._clock() + NAME_TTL)
        self._names.move_to_end(user_id)
        while len(self._names) > CACHE_SIZE:
            self._names.popitem(last=False)
        return name

    async def _shared_info(self, user_id: str) -> dict[str, Any] | None:
        """One users.info call per user at a time: 40 mentions by a new person cost one lookup."""
        lookup = self._looking_up.get(user_id)
        if lookup is None:
            lookup = asyncio.create_task(self._info(user_id))
            self._looking_up[user_id] = lookup
            lookup.add_done_callback(lambda _: self._looking_up.pop(user_id, None))
        return await asyncio.shield(lookup)

    async def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        ids = sorted(set(user_ids))
        found = await asyncio.gather(*(self.name(user_id) for user_id in ids))
        return dict(zip(ids, found, strict=True))

    async def is_workspace_admin(self, user_id: str) -> bool:
        """Admins and owners of the workspace (asked fresh each time: roles change)."""
        user = await self._info(user_id)
        if user is None:
            return False
        return any(bool(user.get(flag)) for flag in ("is_admin", "is_owner", "is_primary_owner"))
