"""Starting a Streamlit server for a test, without races: a port is chosen, the server started on it, and its
health endpoint polled until it answers "ok" or the process ends. A port taken by someone else between choosing
and binding (the server then exits saying so) is retried on another port, instead of failing the test."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Callable, List, Optional, Tuple


def free_port() -> int:
    """A port that was free a moment ago (the server may still lose it: :func:`start_server` retries)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(proc: subprocess.Popen, port: int, timeout: float) -> bool:
    """Poll ``/_stcore/health`` until it answers "ok" (True) or the server exits (False); TimeoutError after
    ``timeout`` seconds."""
    url, end = f"http://127.0.0.1:{port}/_stcore/health", time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and r.read().decode().strip() == "ok":
                    return True
        except OSError:
            pass
        time.sleep(0.2)  # polling interval, not an assertion
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own process group (the CLI's streamlit child included)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def start_server(command: Callable[[int], List[str]], cwd: str, env: Optional[dict] = None, timeout: float = 90,
                 attempts: int = 3) -> Tuple[subprocess.Popen, int]:
    """Start ``command(port)`` and return (process, port) once it is healthy.

    Raises:
        RuntimeError: the server exited for another reason than a taken port (its output attached).
    """
    for _ in range(attempts):
        port = free_port()
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(command(port), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                if healthy(proc, port, timeout):
                    return proc, port
            except BaseException:
                stop(proc)
                raise
            stop(proc)
            log.seek(0)
            out = log.read().decode(errors="replace")
        if "already in use" not in out:
            raise RuntimeError(f"the server exited (code {proc.returncode}):\n{out[-3000:]}")
    raise RuntimeError(f"no free port after {attempts} attempts")
