"""Streamed replies as progressive message edits, the same for every platform (see `renderer`)."""

from core.streaming.budget import EditBudgets
from core.streaming.renderer import EMPTY_REPLY, RenderResult, ReplyRenderer

__all__ = ["EMPTY_REPLY", "EditBudgets", "RenderResult", "ReplyRenderer"]
