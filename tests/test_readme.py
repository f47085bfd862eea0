"""Every Python snippet in README.md runs as written (each in a fresh interpreter, in a temporary directory)."""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNIPPETS = re.findall(r"```python\n(.*?)```", open(os.path.join(REPO, "README.md")).read(), flags=re.S)


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 1


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", SNIPPETS[index]], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, f"README snippet {index} failed:\n{SNIPPETS[index]}\n{out.stderr[-3000:]}"
