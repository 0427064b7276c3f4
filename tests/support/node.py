"""Run the Node clients in tests/node (the official socket.io-client) and read what they print."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).resolve().parent.parent / "node"


def node_binary() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        raise RuntimeError("node and tests/node/node_modules are needed; ./scripts/test installs them (npm ci)")
    return node


class NodeClient:
    def __init__(self, script: str, *args: str) -> None:
        self.script = NODE_DIR / script
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []

    async def __aenter__(self) -> NodeClient:
        self.process = await asyncio.create_subprocess_exec(
            node_binary(),
            str(self.script),
            *self.args,
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def expect(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        """The next line of type ``kind`` (earlier lines of other types are kept in ``lines``)."""
        assert self.process is not None
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    err = await self.process.stderr.read() if self.process.stderr else b""
                    raise AssertionError(f"node exited before {kind!r}: {self.lines} {err.decode()[-2000:]}")
                line = json.loads(raw)
                self.lines.append(line)
                if line["type"] == kind:
                    return line
