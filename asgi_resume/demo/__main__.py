"""``python -m asgi_resume.demo``: run the demo chat on localhost.

From a source checkout on a machine that lacks the demo's dependencies, the first run installs
them into ``.venv`` (next to ``pyproject.toml``) and starts again from there; later runs (and runs
after ``./scripts/test`` created ``.venv``) start from that ``.venv`` at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

NEEDED = ("socketio", "uvicorn", "starlette", "redis", "msgpack", "anyio")
_INSTALLED = "ASGI_RESUME_DEMO_INSTALLED"  # set once this run has installed into .venv: never twice


def _missing() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def _is_running_in(venv: Path) -> bool:
    """Whether this interpreter is ``venv``'s.

    By ``sys.prefix``, not by the interpreter's path: a venv's ``python`` is a symlink to the very
    interpreter that created it, so resolved paths cannot tell the two apart.
    """
    try:
        return Path(sys.prefix).resolve() == venv.resolve() and sys.prefix != sys.base_prefix
    except OSError:
        return False


def _bootstrap(missing: list[str]) -> None:
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").exists():
        sys.exit("The demo needs its dependencies: pip install 'asgi-resume[demo]'")
    venv = root / ".venv"
    python = venv / "bin" / "python"
    argv = [str(python), "-m", "asgi_resume.demo", *sys.argv[1:]]
    if not _is_running_in(venv):
        # another interpreter (the system's python3): start again in .venv, which has (or gets) them
        if not python.exists():
            print(f"First run: creating {venv} ...", flush=True)
            if subprocess.run([sys.executable, "-m", "venv", str(venv)]).returncode:
                sys.exit(f"Creating {venv} failed; see above")
        os.execv(str(python), argv)
    if os.environ.get(_INSTALLED):
        sys.exit(f"Installing the demo's dependencies into {venv} failed: still missing {', '.join(missing)}")
    print(f"Installing the demo's dependencies into {venv} (missing: {', '.join(missing)}) ...", flush=True)
    if subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{root}[demo]"]).returncode:
        sys.exit(f"Installing the demo's dependencies into {venv} failed; see above")
    os.execve(str(python), argv, {**os.environ, _INSTALLED: "1"})


def main() -> None:
    missing = _missing()
    if missing:
        _bootstrap(missing)
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
