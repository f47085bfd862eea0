"""``gatta-viz app [IMAGE ...]``: start the Streamlit app (the page shipped in the package, gatta_viz/app/).

It listens on 127.0.0.1 (this machine only) unless ``--address`` names another interface.
"""
from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import subprocess
import sys
from typing import List, Optional

from . import args as A
from ..app import PAGE

__all__ = ["APP_PATH", "DEFAULT_ADDRESS", "app_command", "build_parser", "is_loopback", "run"]

APP_PATH = PAGE  # the page's script inside the package: a wheel install serves it as a clone does
DEFAULT_ADDRESS = "127.0.0.1"


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach (127.x.x.x, ::1, localhost)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def app_command(port: int = 8501, address: str = DEFAULT_ADDRESS, max_upload_mb: Optional[int] = None) -> List[str]:
    """The ``streamlit run`` command line for the app.

    Args:
        port: TCP port.
        address: interface to listen on (default 127.0.0.1: this machine only).
        max_upload_mb: Streamlit's upload limit in MB (default: the larger of the image limit shared with the
            CLI, ``GATTA_VIZ_MAX_UPLOAD_MB``, and the checkpoint limit, ``GATTA_VIZ_MAX_CHECKPOINT_MB``).
    Returns:
        The argument list.
    Raises:
        ValueError: a limit variable that is not a positive number.
    """
    if max_upload_mb is None:
        from ..app.settings import server_upload_limit_mb

        max_upload_mb = server_upload_limit_mb()
    return [sys.executable, "-m", "streamlit", "run", APP_PATH, "--server.port", str(port), "--server.address", address,
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.maxUploadSize", str(max_upload_mb), "--client.showErrorDetails", "type"]


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or A.Parser(prog="gatta-viz app", description=__doc__)
    p.add_argument("images", nargs="*", type=A.existing_file, help="images to open at start (as if uploaded)")
    p.add_argument("--port", type=A.port, default=8501, help="TCP port, 1..65535")
    p.add_argument("--address", type=A.address, default=DEFAULT_ADDRESS,
                   help="interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 shares the app with "
                        "every network this machine is on)")
    return p


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("streamlit") is None:
        print("error: the app needs streamlit, which is not installed: pip install 'gatta_viz[app]'", file=sys.stderr)
        return 2
    if not os.path.isfile(APP_PATH):
        print(f"error: the app's page is missing from this install ({APP_PATH}); reinstall gatta_viz", file=sys.stderr)
        return 2
    try:
        command = app_command(args.port, args.address)
    except ValueError as e:  # a bad GATTA_VIZ_MAX_UPLOAD_MB...
        print(f"error: {e}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.images:
        env["GATTA_VIZ_FILES"] = os.pathsep.join(os.path.abspath(p) for p in args.images)
    if not is_loopback(args.address):
        print(f"warning: listening on {args.address}: anyone who can reach this machine on port {args.port} can use "
              "the app (it has no login)", file=sys.stderr)
    print(f"gatta_viz app on http://{args.address}:{args.port}  (Ctrl+C to stop)", flush=True)
    try:
        return subprocess.call(command, env=env, cwd=os.path.dirname(APP_PATH))
    except KeyboardInterrupt:
        return 0
