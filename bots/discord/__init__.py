"""The Discord adapter: slash commands and mentions in, streamed replies out (README: Discord).

Modules import the `discord` library absolutely; this package is `bots.discord` and never shadows it.
"""
