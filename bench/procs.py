"""Processes: the bot as users run it (`threadline run`), the fake model, and what /proc says of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
THREADLINE = BIN / "threadline"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """Only what the child needs: no proxies, no DATABASE_URL or tokens leaking in from the shell."""
    env = {name: os.environ[name] for name in KEPT_ENV if name in os.environ}
    env.update(extra)
    return env


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the working tree differed from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted_changes": None}
    return {"commit": commit, "uncommitted_changes": bool(changed)}


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


# --------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the whole process (every thread, living or exited), 1/CLK_TCK resolution."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def schedstat(pid: int) -> tuple[int, int]:
    """CPU ns and times scheduled onto a CPU (≈ wake-ups) of the process's living threads
    (/proc/PID/task/*/schedstat)."""
    ns = slices = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as stat:
            fields = stat.read().split()
            ns += int(fields[0])
            slices += int(fields[2])
    return ns, slices


def machine_busy_seconds() -> float:
    """CPU time every process of the machine used since boot (/proc/stat), in seconds."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def status_kib(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/PID/clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


@dataclass
class CpuMark:
    seconds: float
    ns: int
    slices: int

    @classmethod
    def of(cls, pid: int) -> CpuMark:
        return cls(cpu_seconds(pid), *schedstat(pid))

    def wakeups_since(self, earlier: CpuMark) -> int:
        """Times the process's threads were put on a CPU in between (each costs a VM wake-up)."""
        return self.slices - earlier.slices

    def since(self, earlier: CpuMark) -> float:
        """CPU seconds between two marks: schedstat when no thread exited in between, else /proc stat."""
        fine = (self.ns - earlier.ns) / 1e9
        coarse = self.seconds - earlier.seconds
        return fine if abs(fine - coarse) <= 0.02 + 0.05 * coarse else coarse


# --------------------------------------------------------------------------- metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")


def parse_metrics(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def metric_sum(samples: dict[str, float], name: str) -> float:
    return sum(value for key, value in samples.items() if key == name or key.startswith(name + "{"))


def lag_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, Any] | None:
    """Event-loop lag between two scrapes of `threadline_event_loop_lag_seconds` (histogram deltas)."""
    name = "threadline_event_loop_lag_seconds"
    if f"{name}_count" not in after:
        return None
    count = after[f"{name}_count"] - before.get(f"{name}_count", 0.0)
    total = after[f"{name}_sum"] - before.get(f"{name}_sum", 0.0)
    buckets = []
    for key, value in after.items():
        if key.startswith(f"{name}_bucket{{"):
            found = re.search(r'le="([^"]+)"', key)
            if found:
                buckets.append((float(found.group(1)), value - before.get(key, 0.0)))
    buckets.sort()
    p99: float | None = None
    if count > 0:
        for bound, cumulative in buckets:
            if cumulative >= 0.99 * count:
                p99 = bound
                break
    worst = after.get("threadline_event_loop_lag_max_seconds")
    return {
        "samples": int(count),
        "mean_ms": round(total / count * 1000, 2) if count else None,
        "p99_le_ms": None if p99 is None else (p99 * 1000 if p99 != float("inf") else "inf"),
        "max_ms_since_start": None if worst is None else round(worst * 1000, 1),
    }


# --------------------------------------------------------------------------- the bot


@dataclass
class Bot:
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log: Path
    spawned: float
    ready_at: float | None = None
    session: aiohttp.ClientSession = field(default_factory=aiohttp.ClientSession)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def spawn(cls, env: dict[str, str], workdir: Path, name: str = "bot") -> Bot:
        """`threadline run` in `workdir` (no .env of the repository is read), output to a log file."""
        port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / f"{name}.log"
        full_env = clean_env({**env, "THREADLINE_HOST": "127.0.0.1", "THREADLINE_PORT": str(port)})
        # BENCH_BOT_COMMAND runs something else in place of `threadline run` (an experiment, a profiler).
        command = os.environ.get("BENCH_BOT_COMMAND", "").split() or [str(THREADLINE), "run"]
        with open(log, "ab") as out:
            spawned = time.monotonic()
            proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(proc, port, workdir, log, spawned)

    async def wait_ready(self, limit: float = 60.0) -> float:
        """Poll GET /readyz until 200 (at most `limit` seconds); seconds from spawn to ready."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the bot exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                async with self.session.get(self.url + "/readyz") as response:
                    if response.status == 200:
                        self.ready_at = time.monotonic()
                        return self.ready_at - self.spawned
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.005)
        raise TimeoutError(f"the bot was not ready after {limit} s:\n{self.tail()}")

    async def metrics(self) -> dict[str, float]:
        try:
            async with self.session.get(self.url + "/metrics") as response:
                return parse_metrics(await response.text()) if response.status == 200 else {}
        except aiohttp.ClientError:
            return {}

    async def turns_done(self) -> float | None:
        samples = await self.metrics()
        if not any(key.startswith("threadline_turns") for key in samples):
            return None
        return metric_sum(samples, "threadline_turns_total")

    def cpu(self) -> CpuMark:
        return CpuMark.of(self.pid)

    def rss_kib(self) -> int:
        return status_kib(self.pid, "VmRSS")

    def peak_kib(self) -> int:
        return status_kib(self.pid, "VmHWM")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def errors(self) -> list[str]:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if " ERROR " in line or "Traceback" in line]

    async def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.proc.wait, grace)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        await self.session.close()
        return self.proc.returncode


def run_cli(args: list[str], env: dict[str, str], workdir: Path) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(THREADLINE), *args],
        cwd=workdir,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


# --------------------------------------------------------------------------- the fake model


def _spawn_model(interval: float, first_delay: float) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "bench.model",
        "--interval",
        str(interval),
        "--first-delay",
        str(first_delay),
    ]
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=clean_env({"PYTHONPATH": str(REPO)}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )


@dataclass
class ModelProc:
    proc: subprocess.Popen[str]
    port: int
    session: aiohttp.ClientSession = field(default_factory=aiohttp.ClientSession)

    @classmethod
    async def start(cls, interval: float = 0.02, first_delay: float = 0.02) -> ModelProc:
        proc = _spawn_model(interval, first_delay)
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line:
            raise RuntimeError("the fake model did not start")
        return cls(proc, int(json.loads(line)["port"]))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def env(self) -> dict[str, str]:
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": "sk-bench"}

    async def records(self, since: int = 0) -> list[dict[str, Any]]:
        async with self.session.get(f"http://127.0.0.1:{self.port}/_bench/records?since={since}") as response:
            data = await response.json()
        return list(data["records"])

    async def count(self) -> int:
        async with self.session.get(
            f"http://127.0.0.1:{self.port}/_bench/records?since=1000000000"
        ) as response:
            return int((await response.json())["count"])

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    async def stop(self) -> None:
        await self.session.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
