"""The Discord adapter: slash commands and mentions in, streamed replies out (see docs/discord.md).

Modules import the `discord` library absolutely; this package is `bots.discord` and never shadows it.
"""
