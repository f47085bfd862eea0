"""``gatta-viz app [IMAGE ...]``: start the Streamlit app (app/streamlit_app.py in the repository)."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import List, Optional

__all__ = ["APP_PATH", "app_command", "build_parser", "run"]

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP_PATH = os.path.join(_REPO, "app", "streamlit_app.py")


def app_command(port: int = 8501, address: str = "localhost") -> List[str]:
    """The ``streamlit run`` command line for the app."""
    return [sys.executable, "-m", "streamlit", "run", APP_PATH, "--server.port", str(port), "--server.address", address,
            "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="gatta-viz app", description=__doc__)
    p.add_argument("images", nargs="*", help="images to open at start (as if uploaded)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="localhost", help="interface to listen on (0.0.0.0 to share on a network)")
    return p


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(APP_PATH):
        print(f"error: the app is not at {APP_PATH}; run from a clone of the gatta_viz repository", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.images:
        env["GATTA_VIZ_FILES"] = os.pathsep.join(os.path.abspath(p) for p in args.images)
    print(f"gatta_viz app on http://{args.address}:{args.port}  (Ctrl+C to stop)", flush=True)
    try:
        return subprocess.call(app_command(args.port, args.address), env=env, cwd=os.path.dirname(APP_PATH))
    except KeyboardInterrupt:
        return 0
