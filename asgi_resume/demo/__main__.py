"""``python -m asgi_resume.demo``: run the demo chat on localhost.

From a source checkout on a machine that lacks the demo's dependencies, the first run installs
them into ``.venv`` (next to ``pyproject.toml``) and starts again from there.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

NEEDED = ("socketio", "uvicorn", "starlette", "redis", "msgpack", "anyio")


def _bootstrap() -> None:
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").exists():
        sys.exit("The demo needs its dependencies: pip install 'asgi-resume[demo]'")
    venv = root / ".venv"
    python = venv / "bin" / "python"
    if Path(sys.executable).resolve() == python.resolve():
        sys.exit("Installing the demo's dependencies into .venv failed; see above")
    print(f"First run: installing the demo's dependencies into {venv} ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{root}[demo]"], check=True)
    os.execv(str(python), [str(python), "-m", "asgi_resume.demo", *sys.argv[1:]])


def main() -> None:
    if any(importlib.util.find_spec(name) is None for name in NEEDED):
        _bootstrap()
    parser = argparse.ArgumentParser(prog="python -m asgi_resume.demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--tokens", type=int, default=400, help="tokens per answer")
    parser.add_argument("--pace", type=float, default=0.06, help="seconds between tokens")
    args = parser.parse_args()

    import uvicorn

    from asgi_resume.demo.app import create_app

    backend = os.environ.get("ASGI_RESUME_REDIS_URL") or "the in-process memory log"
    print(f"asgi_resume demo on http://{args.host}:{args.port}/  (log: {backend}; Ctrl+C stops it)", flush=True)
    uvicorn.run(create_app(tokens=args.tokens, pace=args.pace), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
