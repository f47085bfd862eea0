"""The README and the documentation site say what works: every Python snippet in README.md and in the site's pages
(docs/site/) runs as written (each in a fresh interpreter, in a temporary directory); the README's two commands are
the ones CI runs; it stays a landing page (at most about 120 lines; the rest is on the site) whose relative links
point at files that exist."""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
SITE = os.path.join(REPO, "docs", "site")
SITE_PAGES = sorted(p for p in glob.glob(os.path.join(SITE, "**", "*.md"), recursive=True)  # the site's own pages, not
                    if os.path.realpath(p).startswith(os.path.realpath(SITE) + os.sep))  # RESULTS.md etc. linked in
SITE_SNIPPETS = [(os.path.relpath(p, REPO), i, code) for p in SITE_PAGES
                 for i, code in enumerate(re.findall(r"```python\n(.*?)```", open(p, encoding="utf-8").read(), flags=re.S))]

SETUP_COMMAND = "bash .ci/install && .venv/bin/gatta-viz demo --out demo_out"
TEST_COMMAND = ".venv/bin/python -m pytest -q"


def run_snippet(code: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 1


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, tmp_path):
    out = run_snippet(SNIPPETS[index], tmp_path)
    assert out.returncode == 0, f"README snippet {index} failed:\n{SNIPPETS[index]}\n{out.stderr[-3000:]}"


def test_the_site_has_python_snippets():
    assert len(SITE_SNIPPETS) >= 5


@pytest.mark.parametrize("page,index,code", SITE_SNIPPETS, ids=[f"{p}#{i}" for p, i, _ in SITE_SNIPPETS])
def test_site_snippet_runs(page, index, code, tmp_path):
    photos = tmp_path / "my_photos"  # the folder the "explain a folder" guide names
    photos.mkdir()
    for path in sorted(glob.glob(os.path.join(REPO, "sample_images", "fashion-mnist", "*.png")))[:3]:
        shutil.copy(path, photos)
    out = run_snippet(code, tmp_path)
    assert out.returncode == 0, f"{page} snippet {index} failed:\n{code}\n{out.stderr[-3000:]}"


def test_the_readme_gives_the_two_commands_that_ci_runs():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    assert SETUP_COMMAND in lines and TEST_COMMAND in lines, "README must give the set-up and the test command"
    ci = [line.strip() for line in open(os.path.join(REPO, ".ci", "run"), encoding="utf-8")
          if line.strip() and not line.startswith("#")]
    assert "bash .ci/install" in ci and ci[-1] == TEST_COMMAND  # CI installs as the README says, then runs its tests


def test_the_readme_links_point_at_files_that_exist():
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]
    assert local, "the README links nothing of the repository"
    missing = [link for link in local if link and not os.path.exists(os.path.join(REPO, link))]
    assert not missing, f"README links to missing files: {missing}"


def test_the_readme_is_a_landing_page_that_links_into_the_site():
    assert README.count("\n") <= 125, "README.md grew past a landing page: move the details into docs/site/"
    for page in ("docs/site/getting-started.md", "docs/site/concepts.md", "docs/site/troubleshooting.md",
                 "docs/site/howto/fine-tune.md", "docs/RESULTS.md"):
        assert f"]({page}" in README, f"README does not link {page}"
