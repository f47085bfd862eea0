"""Load test of the Streamlit app: many sessions, many renders, malformed files, against 127.0.0.1 only.

Starts its own Streamlit server (``gatta-viz app``'s command line) on a free port of 127.0.0.1, drives it with
headless Chromium sessions (selenium; Debian's chromium + chromium-driver), prints tables and stops the server.
Three runs:

1. ``--sessions`` browsers upload an image at the same moment, ``--rounds`` times (each round a new image;
   each browser has rendered one image before, untimed, unless ``--cold-browsers``):
   upload-to-render time per upload (from handing the file to the page until its three map captions show),
   p50 / p95 / max, errors on the page, server RSS.
2. ``--renders`` renders in a row in one session (each a different image; the previous upload is removed):
   server RSS before, every 25 renders, and after (growth target: <= 50 MB).
3. Malformed files mixed with good ones in one upload: every good image must render and every bad file get an
   error naming it and its problem.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/load_app.py                  # 8 sessions x 3 rounds, 200 renders
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/load_app.py --sessions 4 --rounds 1 --renders 40 --json out.json

Bounded: at most 16 sessions, 1000 renders, and ``--timeout`` seconds in all (default 1200).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from typing import Dict, List, Optional

import psutil
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from gatta_viz.cli.app import app_command  # noqa: E402

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CAPTION = "[data-testid='stImageCaption']"
MB = 2**20


class Deadline:
    """The whole run's time budget."""

    def __init__(self, seconds: float) -> None:
        self.end = time.time() + seconds

    def left(self, cap: float) -> float:
        rest = self.end - time.time()
        if rest <= 0:
            raise TimeoutError("the benchmark's --timeout ran out")
        return min(cap, rest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def cpu_seconds(pids: List[int]) -> float:
    """User + system CPU time of these processes and their children (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc] + proc.children(recursive=True):
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def percentile(values: List[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ---------------------------------------------------------------- test files
def make_files(folder: str, n_good: int) -> Dict[str, List[str]]:
    """Distinct Fashion-MNIST test images as PNGs, and malformed files with the words their error must contain."""
    import gatta_viz as gv

    data = gv.load_fashion_mnist("test").subset(n_good)
    good = []
    for i in range(n_good):
        path = os.path.join(folder, "good", f"img{i:04d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(data.images[i, 0].numpy(), "L").save(path)
        good.append(path)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    def header_png(w: int, h: int, ctype: int) -> bytes:
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))

    jpg = io.BytesIO()
    Image.new("RGB", (300, 300), (120, 30, 200)).save(jpg, "JPEG", quality=95)
    thin = io.BytesIO()
    Image.new("L", (1, 400), 200).save(thin, "PNG")
    crc = bytearray(open(good[0], "rb").read())
    crc[29] ^= 0xFF
    bad = {
        "empty.png": (b"", "empty (0 bytes)"),
        "notes.png": (b"this is not an image", "not a recognised image format"),
        "truncated.jpg": (jpg.getvalue()[:400], "truncated or corrupt"),
        "bomb.png": (header_png(20000, 20000, 0), "40,000,000-pixel limit"),
        "rgba-huge.png": (header_png(6320, 6320, 6), "decoding limit"),
        "crc.png": (bytes(crc), "broken PNG file"),
        "thin.png": (thin.getvalue(), "too thin for the model's 28x28 input"),  # decodes, refused by preprocessing
    }
    bad_paths, expected = [], {}
    for name, (content, words) in bad.items():
        path = os.path.join(folder, "bad", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
        bad_paths.append(path)
        expected[name] = words
    return {"good": good, "bad": bad_paths, "expected": expected}


# ---------------------------------------------------------------- a browser session
class Session:
    """One headless Chromium tab on the app."""

    def __init__(self, url: str, deadline: Deadline) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="gv-load-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1300,1800", f"--user-data-dir={self.profile}"):
            opts.add_argument(a)
        self.driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
        self.deadline = deadline
        self.driver.get(url)
        self.input()

    def wait(self, cond, cap: float = 120.0):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, self.deadline.left(cap), poll_frequency=0.05).until(cond)

    def input(self):
        from selenium.webdriver.common.by import By

        return self.wait(lambda d: d.find_element(By.CSS_SELECTOR, "[data-testid='stFileUploader'] input[type=file]"))

    def texts(self, selector: str) -> List[str]:
        """Texts of the elements matching ``selector``, read in one step (the page may re-render meanwhile)."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText)", selector)

    def map_captions(self) -> List[str]:
        return [t for t in self.texts(CAPTION) if t.startswith("alpha x agreement")]

    def subheaders(self) -> List[str]:
        return [t.strip() for t in self.texts("[data-testid='stHeadingWithActionElements'] h3")]

    def errors(self) -> List[str]:
        return (self.texts("[data-testid='stAlertContentError']")
                + [f"EXCEPTION: {t[:300]}" for t in self.texts("[data-testid='stException']")])

    def upload(self, paths: List[str]) -> None:
        """Choose ``paths`` in the uploader, as a file dialog does (chromedriver would otherwise add them to the
        files chosen before, re-uploading removed ones)."""
        field = self.input()
        self.driver.execute_script("arguments[0].value = ''", field)
        field.send_keys("\n".join(paths))

    def remove_uploads(self) -> None:
        """Click every upload's remove button (one at a time: the page re-renders after each)."""
        chips = "[data-testid='stFileChipDeleteBtn'] button"
        while True:
            n = self.driver.execute_script("return document.querySelectorAll(arguments[0]).length", chips)
            if not n:
                return
            from selenium.common.exceptions import WebDriverException
            from selenium.webdriver.common.by import By

            try:  # a real click (a script's click() does not reach the uploader's handler)
                self.driver.find_element(By.CSS_SELECTOR, chips).click()
            except WebDriverException:  # re-rendered under us: look again
                continue
            self.wait(lambda d, n=n: d.execute_script("return document.querySelectorAll(arguments[0]).length", chips) < n, 30)

    def render_one(self, path: str) -> float:
        """Upload one file (after removing the previous ones) and return seconds until its maps show."""
        self.remove_uploads()
        self.wait(lambda d: not self.map_captions(), 60)
        name = os.path.basename(path)
        t0 = time.perf_counter()
        self.upload([path])
        self.wait(lambda d: len(self.map_captions()) >= 3 and name in self.subheaders())
        return time.perf_counter() - t0

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


# ---------------------------------------------------------------- the three runs
def run_concurrent(url: str, files: List[str], sessions: int, rounds: int, server_pid: int, deadline: Deadline,
                   warm_browsers: bool = True) -> Dict:
    opened: List[Session] = []
    try:
        for i in range(sessions):
            opened.append(Session(url, deadline))
            if warm_browsers:  # the browser loads plotly.js etc. with its first render: not the server's time
                opened[-1].render_one(files[-1 - i])
        times: List[float] = []
        per_round: List[List[float]] = []
        errors: List[str] = []
        rss = []
        browsers = [s.driver.service.process.pid for s in opened]
        cpu0 = (cpu_seconds([server_pid]), cpu_seconds(browsers), time.perf_counter())
        for rnd in range(rounds):
            start = len(times)
            barrier = threading.Barrier(sessions)
            lock = threading.Lock()

            def work(i: int, rnd: int = rnd, barrier: threading.Barrier = barrier, lock: threading.Lock = lock) -> None:
                s = opened[i]
                path = files[(rnd * sessions + i) % len(files)]
                try:
                    s.remove_uploads()
                    s.wait(lambda d: not s.map_captions(), 60)
                    barrier.wait(timeout=deadline.left(120))
                    t0 = time.perf_counter()
                    s.upload([path])
                    s.wait(lambda d: len(s.map_captions()) >= 3 and os.path.basename(path) in s.subheaders())
                    dt = time.perf_counter() - t0
                    page_errors = s.errors()
                    with lock:
                        times.append(dt)
                        errors.extend(page_errors)
                except Exception as e:  # noqa: BLE001 - counted as a failed render
                    with lock:
                        errors.append(f"session {i}: {type(e).__name__}: {e}"[:300])

            threads = [threading.Thread(target=work, args=(i,)) for i in range(sessions)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(deadline.left(600))
            rss.append(rss_mb(server_pid))
            per_round.append(times[start:])
        warm = [t for r in per_round[1:] for t in r]
        cpu = {"server_s": cpu_seconds([server_pid]) - cpu0[0], "browsers_s": cpu_seconds(browsers) - cpu0[1],
               "wall_s": time.perf_counter() - cpu0[2]}
        return {"cpu": cpu, "uploads": sessions * rounds, "rendered": len(times), "errors": errors, "p50": percentile(times, 0.5),
                "p95": percentile(times, 0.95), "max": max(times) if times else float("nan"), "times": times,
                "per_round": per_round, "warm_p50": percentile(warm, 0.5), "warm_p95": percentile(warm, 0.95),
                "rss_after_rounds_mb": rss}
    finally:
        for s in opened:
            s.close()


def run_sequential(url: str, files: List[str], renders: int, server_pid: int, deadline: Deadline,
                   shots: Optional[str] = None) -> Dict:
    s = Session(url, deadline)
    try:
        for path in files[:3]:  # warm-up: this session's first renders
            s.render_one(path)
        before = rss_mb(server_pid)
        curve, times, errors, failures = [(0, before)], [], [], []
        for i in range(renders):
            path = files[(i + 3) % len(files)]
            try:
                times.append(s.render_one(path))
                errors.extend(s.errors())
            except Exception as e:  # noqa: BLE001 - a render that never showed: recorded, then a fresh page
                if isinstance(e, TimeoutError):
                    raise
                note = {"render": i, "file": os.path.basename(path), "error": type(e).__name__,
                        "page_errors": s.errors(), "subheaders": s.subheaders(), "captions": len(s.map_captions())}
                if shots:
                    note["screenshot"] = os.path.join(shots, f"failed_render_{i}.png")
                    s.driver.save_screenshot(note["screenshot"])
                failures.append(note)
                s.driver.get(url)
                s.input()
            if (i + 1) % 25 == 0 or i + 1 == renders:
                curve.append((i + 1, rss_mb(server_pid)))
        after = rss_mb(server_pid)
        return {"renders": renders, "rendered": len(times), "failures": failures, "rss_before_mb": before,
                "rss_after_mb": after, "growth_mb": after - before, "peak_mb": max(v for _, v in curve), "curve": curve,
                "errors": errors, "p50": percentile(times, 0.5), "p95": percentile(times, 0.95)}
    finally:
        s.close()


def run_malformed(url: str, good: List[str], bad: List[str], expected: Dict[str, str], deadline: Deadline) -> Dict:
    s = Session(url, deadline)
    try:
        mixed = [p for pair in zip(bad, good) for p in pair] + bad[len(good):]
        s.upload(mixed)
        good_names = [os.path.basename(p) for p in good]
        s.wait(lambda d: all(n in s.subheaders() for n in good_names)
               and len(s.map_captions()) >= 3 * len(good_names) and len(s.errors()) >= len(bad), 300)
        errors = s.errors()
        named = {n: next((e for e in errors if n in e), None) for n in expected}
        wrong = {n: e for n, e in named.items() if e is None or expected[n] not in e}
        return {"good": len(good), "good_rendered": sum(n in s.subheaders() for n in good_names), "bad": len(bad),
                "bad_named": len(bad) - len(wrong), "errors": errors, "wrong": wrong}
    finally:
        s.close()


def run_in_process(files: List[str], sessions: int, rounds: int, workers: int) -> Dict:
    """The server's part alone: ``sessions`` threads render an upload at once through the page's modules
    (gatta_viz.app: decode, explain with ablation and Grad-CAM, overlays), on a pool of ``workers`` replicas
    (1 = renders take turns, as with one lock)."""
    import torch

    from gatta_viz.app import models, render, settings
    from gatta_viz.app.pool import ModelPool
    from gatta_viz.models.checkpoint import DEFAULT_MODEL

    torch.set_num_threads(settings.torch_threads_per_render(workers))
    pool = ModelPool(models.load_model(DEFAULT_MODEL), size=workers)
    render.warm_up(pool)
    times: List[float] = []
    lock = threading.Lock()
    for rnd in range(rounds):
        barrier = threading.Barrier(sessions)

        def work(i: int, rnd: int = rnd, barrier: threading.Barrier = barrier) -> None:
            with open(files[(rnd * sessions + i) % len(files)], "rb") as f:
                data = f.read()
            barrier.wait()
            t0 = time.perf_counter()
            render.render_upload(pool, f"{i}.png", data)
            with lock:
                times.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    return {"workers": workers, "renders": len(times), "p50": percentile(times, 0.5), "p95": percentile(times, 0.95),
            "max": max(times)}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--renders", type=int, default=200)
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds for the whole benchmark")
    p.add_argument("--skip", nargs="*", default=[], choices=["concurrent", "sequential", "malformed", "in-process"])
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--screenshots", default=None, help="folder for screenshots of renders that never showed")
    p.add_argument("--cold-browsers", action="store_true",
                   help="do not render one image in each browser before the timed rounds (then round 1 includes "
                        "every browser loading the page's scripts, on the same cores as the server)")
    args = p.parse_args(argv)
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        print("needs Debian's chromium and chromium-driver", file=sys.stderr)
        return 2
    sessions, renders = max(1, min(args.sessions, 16)), max(1, min(args.renders, 1000))
    deadline = Deadline(args.timeout)
    work = tempfile.mkdtemp(prefix="gv-load-")
    port = free_port()
    env = {**os.environ, "GATTA_VIZ_FILES": "", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    server = subprocess.Popen(app_command(port, "127.0.0.1"), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    results: Dict = {"cpu_cores": len(os.sched_getaffinity(0)), "load_average_at_start": os.getloadavg()}
    try:
        files = make_files(work, max(renders + 3, sessions * args.rounds, 8))
        url = f"http://127.0.0.1:{port}/"
        wait_http(url + "_stcore/health", deadline.left(60))
        results["server_rss_start_mb"] = rss_mb(server.pid)
        if "concurrent" not in args.skip:
            results["concurrent"] = run_concurrent(url, files["good"], sessions, args.rounds, server.pid, deadline,
                                                   not args.cold_browsers)
        if "sequential" not in args.skip:
            results["sequential"] = run_sequential(url, files["good"], renders, server.pid, deadline, args.screenshots)
        if "malformed" not in args.skip:
            results["malformed"] = run_malformed(url, files["good"][:4], files["bad"], files["expected"], deadline)
        results["server_rss_end_mb"] = rss_mb(server.pid)
        if "in-process" not in args.skip:  # after the browsers are closed
            results["in_process"] = [run_in_process(files["good"], sessions, args.rounds, w)
                                     for w in sorted({1, len(os.sched_getaffinity(0))})]
        results["load_average_at_end"] = os.getloadavg()
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n### Streamlit app under load (127.0.0.1, {results['cpu_cores']} cores, load average at start "
          f"{results['load_average_at_start'][0]:.2f}, at end {results.get('load_average_at_end', [float('nan')])[0]:.2f})\n")
    print(f"server RSS: {results['server_rss_start_mb']:.0f} MB at start, {results.get('server_rss_end_mb', float('nan')):.0f} MB at end\n")
    ok = True
    if "concurrent" in results:
        c = results["concurrent"]
        print("| sessions at once | uploads | rendered | errors on the page | p50 upload-to-render | p95 | max "
              "| p50 / p95 of rounds 2+ | server RSS after each round |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        print(f"| {sessions} | {c['uploads']} | {c['rendered']} | {len(c['errors'])} | {c['p50']:.2f} s | {c['p95']:.2f} s "
              f"| {c['max']:.2f} s | {c['warm_p50']:.2f} / {c['warm_p95']:.2f} s "
              f"| {', '.join(f'{v:.0f}' for v in c['rss_after_rounds_mb'])} MB |\n")
        for i, r in enumerate(c["per_round"]):
            print(f"  round {i + 1}: " + ", ".join(f"{t:.1f}" for t in sorted(r)) + " s")
        cpu = c["cpu"]
        print(f"  CPU time during the rounds ({cpu['wall_s']:.0f} s wall clock, {results['cpu_cores']} cores): server "
              f"{cpu['server_s']:.0f} s, the {sessions} browsers {cpu['browsers_s']:.0f} s\n")
        for e in c["errors"][:10]:
            print("  error:", e)
        ok &= c["rendered"] == c["uploads"] and not c["errors"]
    if "sequential" in results:
        s = results["sequential"]
        print("| renders in a row | rendered | server RSS before | after | growth | peak | p50 / p95 upload-to-render |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {s['renders']} | {s['rendered']} | {s['rss_before_mb']:.0f} MB | {s['rss_after_mb']:.0f} MB "
              f"| {s['growth_mb']:+.0f} MB | {s['peak_mb']:.0f} MB | {s['p50']:.2f} / {s['p95']:.2f} s |\n")
        for f in s["failures"]:
            print("  render that never showed:", f)
        print("RSS every 25 renders: " + ", ".join(f"{n}: {v:.0f}" for n, v in s["curve"]) + " MB\n")
        ok &= s["growth_mb"] <= 50 and not s["errors"] and not s["failures"]
    if "malformed" in results:
        m = results["malformed"]
        print("| good files | rendered | malformed files | named with their problem |")
        print("|---:|---:|---:|---:|")
        print(f"| {m['good']} | {m['good_rendered']} | {m['bad']} | {m['bad_named']} |\n")
        for e in m["errors"]:
            print("  ", e.replace("\n", " ")[:160])
        for n, e in m["wrong"].items():
            print(f"  NOT NAMED AS EXPECTED: {n}: {e}")
        ok &= m["good_rendered"] == m["good"] and m["bad_named"] == m["bad"]
    if "in_process" in results:
        print(f"Server work alone (no browser, no Streamlit): {sessions} threads render an upload at once through "
              f"gatta_viz.app, {args.rounds} rounds\n")
        print("| render workers (model replicas) | renders | p50 | p95 | max |")
        print("|---:|---:|---:|---:|---:|")
        for r in results["in_process"]:
            print(f"| {r['workers']} | {r['renders']} | {r['p50']:.2f} s | {r['p95']:.2f} s | {r['max']:.2f} s |")
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print("all targets met" if ok else "SOME TARGETS MISSED (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
