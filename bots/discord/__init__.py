"""The Discord adapter: slash commands and mentions in, streamed replies out (see the Discord section of README.md).

Modules import the `discord` library absolutely; this package is `bots.discord` and never shadows it.
"""
