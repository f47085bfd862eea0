"""The package as a user installs it: a wheel built by ``pip wheel``, installed with ``--no-deps`` into a fresh
virtual environment outside the repository, run from a folder outside it. The new environment reuses this
environment's installed dependencies (a .pth file naming this interpreter's site-packages, found with sysconfig),
never the repository's source: the test checks that ``gatta_viz`` is imported from the new environment.

Checked: ``gatta-viz explain`` (its files, and maps equal to the library's in this process), ``gatta-viz demo``
(samples made on the fly: the repository's sample_images/ is not there), ``gatta-viz app`` (serves the page
shipped in the package: health "ok", the page's HTML; the page script itself explains a sample image shipped in
the package and composes a scene from the packaged garments)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request

import numpy as np
import pytest

import gatta_viz as gv
from app_server import start_server, stop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "sample_images", "fashion-mnist", "trouser_test00002.png")


def run(cmd, cwd, timeout=300, env=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, a work folder outside the repo, env) with the wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    assert not str(root).startswith(REPO)
    src = root / "src"  # a copy of what the wheel is built from: no build/ folder left in the repository
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, f), src / f)
    shutil.copytree(os.path.join(REPO, "gatta_viz"), src / "gatta_viz", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = root / "wheels"
    # the build backend of this environment when it has one (fast, offline); else pip fetches it (build isolation)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    run([sys.executable, "-m", "pip", "wheel", str(src), "-w", str(wheels), "--no-deps", "-q", *isolation],
        cwd=str(root))
    (wheel,) = list(wheels.glob("gatta_viz-*.whl"))
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=str(root))
    python = venv / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=str(root)).strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}  # this environment's dependencies
    assert not any(p.startswith(REPO + os.sep + "gatta_viz") for p in ours)
    with open(os.path.join(site, "_project_dependencies.pth"), "w") as f:
        f.write("\n".join(sorted(ours)) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=str(root))
    work = root / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATTA_VIZ_", "PYTHONPATH"))}
    env["OMP_NUM_THREADS"] = "1"
    where = run([str(python), "-c", "import gatta_viz, os; print(os.path.realpath(gatta_viz.__file__))"], cwd=str(work),
                env=env).strip()
    assert where.startswith(os.path.realpath(site)), where  # the wheel's copy, not the repository's
    return venv / "bin", work, env


def test_explain_from_the_wheel_writes_the_library_s_maps(installed):
    bin_dir, work, env = installed
    shutil.copy(SAMPLE, work / "trouser.png")
    run([str(bin_dir / "gatta-viz"), "explain", "trouser.png", "--out", "out"], cwd=str(work), env=env)
    out = work / "out"
    layers = ["layer1", "layer2", "layer3"]
    for name in ["index.json", "trouser.json", "trouser_maps.npz", "trouser_fig3.png"] + [
            f"trouser_overlay_{n}.png" for n in layers]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    lm = gv.load_model()
    ex = gv.explain(lm, gv.prepare_image(gv.load_image(SAMPLE), lm.preprocess), gradcam=False)
    summary = json.loads((out / "trouser.json").read_text())
    assert json.dumps(summary).count(ex.top_pass2[0]["label"]) >= 1 and ex.top_pass2[0]["label"] == "Trouser"
    maps = np.load(out / "trouser_maps.npz")
    for n in layers:
        assert np.array_equal(maps[f"heatmap/{n}"], ex.heatmaps[n]), n


def test_demo_from_the_wheel_explains_the_packaged_samples(installed):
    bin_dir, work, env = installed
    out = run([str(bin_dir / "gatta-viz"), "demo", "--out", "demo"], cwd=str(work), env=env, timeout=600)
    assert "accuracy" in out.lower()
    figures = sorted(p.name for p in (work / "demo").glob("*_fig3.png"))
    shipped = [f for f in os.listdir(os.path.join(REPO, "sample_images", "fashion-mnist")) if f.endswith(".png")]
    assert len(figures) == len(shipped) == 30 and (work / "demo" / "alphas.png").is_file(), figures


def test_app_from_the_wheel_serves_the_packaged_page(installed):
    bin_dir, work, env = installed
    page = run([str(bin_dir / "python"), "-c", "import gatta_viz.app as a; print(a.PAGE)"], cwd=str(work), env=env).strip()
    assert page.endswith(os.path.join("gatta_viz", "app", "streamlit_page.py")) and not page.startswith(REPO)
    server, port = start_server(lambda port: [str(bin_dir / "gatta-viz"), "app", "--port", str(port)], cwd=str(work),
                                env=env)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            html = r.read().decode()
        assert r.status == 200 and "Streamlit Inc." in html and '<div id="root"></div>' in html
    finally:
        stop(server)
    # the page script itself, run by Streamlit's test harness inside the new environment: a sample image shipped
    # in the package, and a scene composed from the packaged garments for the bundled scene model
    script = """
from streamlit.testing.v1 import AppTest
import gatta_viz.app as a
at = AppTest.from_file(a.PAGE, default_timeout=120).run()
at.multiselect(key="samples").set_value(["fashion-mnist/trouser_test00002.png"]).run()
assert not at.exception and not at.error, (at.exception, at.error)
print(at.title[0].value)
print([s.value for s in at.subheader])
print(next(m.value for m in at.markdown if m.value.startswith("**Pass 2")).splitlines()[1].split(":")[0])
at.multiselect(key="samples").set_value([]).run()
at.selectbox(key="model").set_value("fmnist-pairs-gatta-resnet").run()
assert not at.exception and not at.error, (at.exception, at.error)
print([s.value for s in at.subheader])
"""
    lines = run([str(bin_dir / "python"), "-c", script], cwd=str(work), env=env).strip().splitlines()
    assert lines == ["GAttA attention across layers", "['fashion-mnist/trouser\\\\_test00002.png']", "1. Trouser",
                     "['scene: Trouser at (0, 0) + Bag at (20, 20)']"], lines
