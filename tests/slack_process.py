"""A real `threadline run` process (Slack HTTP mode) against the fakes running in the test's event loop.

    service = SlackService(tmp_path / "a", database_url=url, slack=fake_slack, llm=fake_openai)
    await service.start()
    await service.wait_ready()
    ...
    assert await service.terminate() == 0

Output goes to a log file (never a pipe a busy test might not drain); `log()` reads it for messages.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SlackService:
    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str,
        slack: FakeSlack,
        llm: FakeOpenAI,
        **env: str,
    ) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.slack = slack
        self.llm = llm
        self.extra_env = env
        self.port = 0
        self.process: asyncio.subprocess.Process | None = None
        self._log_path = workdir / "threadline.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SLACK_", "DISCORD_", "OPENAI_", "THREADLINE_", "DATABASE_URL"))
        }
        env.update(self.llm.env())
        env.update(
            PYTHONPATH=str(ROOT),
            DATABASE_URL=self.database_url,
            SLACK_BOT_TOKEN=self.slack.bot_token,
            SLACK_SIGNING_SECRET=self.slack.signing_secret,
            SLACK_API_URL=self.slack.api_url,
            THREADLINE_HOST="127.0.0.1",
            THREADLINE_PORT=str(self.port),
            THREADLINE_SLACK_EDIT_INTERVAL="0.05",
            THREADLINE_LLM_MAX_ATTEMPTS="2",
        )
        env.update(self.extra_env)
        return env

    async def start(self) -> None:
        """Start the process on a new free port (a restart gets a new one)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with self._log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bots.cli",
                "run",
                cwd=self.workdir,
                env=self.env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def log(self) -> str:
        return self._log_path.read_text(encoding="utf-8", errors="replace") if self._log_path.exists() else ""

    async def wait_ready(self) -> None:
        """Until GET /readyz answers 200 (fails with the process's log if it exits or takes too long)."""
        assert self.process is not None
        async with aiohttp.ClientSession() as session, asyncio.timeout(START_TIMEOUT):
            while True:
                if self.process.returncode is not None:
                    raise AssertionError(f"threadline exited with {self.process.returncode}:\n{self.log()}")
                try:
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """GET /metrics as {(sample name, sorted labels): value}."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            text = await response.text()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 when none)."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, sample_labels), value in (await self.metrics()).items()
            if sample == name and wanted <= set(sample_labels)
        )

    async def terminate(self, within: float) -> int:
        """SIGTERM, then the exit status (AssertionError if it takes longer than `within` seconds)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            raise AssertionError(f"threadline did not exit within {within} s:\n{self.log()}") from None

    async def kill(self) -> None:
        """SIGKILL (a crash, an OOM kill): nothing runs any more in the process."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
