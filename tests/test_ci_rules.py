"""The suite says what it checked: under CI a missing optional library fails (tests/conftest.py), and the ``test``
extra lists every third-party library the tests import."""
import ast
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_pytest(tmp_path, ci):
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_needs_a_library.py").write_text(
        "import pytest\n\n\ndef test_it():\n    pytest.importorskip('no_such_library_xyz')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_missing_optional_library_skips_locally_and_fails_under_ci(tmp_path):
    local = run_pytest(tmp_path, ci=False)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-2000:]
    ci = run_pytest(tmp_path, ci=True)
    assert ci.returncode == 1 and "1 failed" in ci.stdout, ci.stdout[-2000:]
    assert "'no_such_library_xyz' is missing and CI is set" in ci.stdout and "pip install -e .[test]" in ci.stdout


# import name -> distribution name, where they differ
DISTRIBUTION = {"pytorch_grad_cam": "grad-cam", "sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml"}


def test_the_test_extra_lists_every_library_the_tests_import():
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    deps = re.search(r"\ndependencies = \[(.*?)\n\]", text, re.S).group(1)
    test = re.search(r"\ntest = \[(.*?)\n\]", text, re.S).group(1)
    app = re.search(r"\napp = \[(.*?)\]\n", text, re.S).group(1)
    listed = {re.split(r"[<>=;\[ ]", d.strip().strip('"'))[0].lower() for d in re.findall(r'"[^"]+"', deps + test + app)}
    stdlib = set(sys.stdlib_module_names)
    local = {f[:-3] for f in os.listdir(HERE) if f.endswith(".py")} | {"gatta_viz", "app_server"}
    needed = set()
    for f in os.listdir(HERE):
        if not f.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(HERE, f)).read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip" and node.args
                  and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            for n in names:
                top = n.split(".")[0]
                if top not in stdlib and top not in local:
                    needed.add(DISTRIBUTION.get(top, top).lower().replace("_", "-"))
    missing = sorted(n for n in needed if n not in listed and n.replace("-", "_") not in listed)
    assert missing == [], f"tests import {missing}, which pyproject's dependencies/test/app extras do not list"
    assert "torchcam>=0.5.0; python_version >= '3.11'" in test and "python_version < '3.11'" in test  # every Python
    assert 'requires-python = ">=3.10"' in text
