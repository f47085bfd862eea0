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


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req):
    return _norm(re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0])


def test_the_test_extra_provides_every_library_the_tests_import():
    """Every third-party module a test imports comes from a distribution that the ``test`` extra (with the extras
    and dependencies it pulls in, and what those require) installs."""
    from importlib import metadata

    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    block = re.search(r"\[project\.optional-dependencies\](.*?)\n\[", text, re.S).group(1)
    extras = {m.group(1): re.findall(r'"([^"]+)"', m.group(2))
              for m in re.finditer(r"^(\w+) = \[(.*?)\]\s*(?:#.*)?$", block, re.S | re.M)}
    deps = re.findall(r'"([^"]+)"', re.search(r"\ndependencies = \[(.*?)\n\]", text, re.S).group(1))
    wanted, todo = set(deps), ["test"]
    while todo:  # the test extra and the extras it names (gatta_viz[app,docs,...])
        for req in extras.get(todo.pop(), []):
            own = re.match(r"gatta_viz\[(.*)\]", req)
            if own:
                todo += [e.strip() for e in own.group(1).split(",")]
            else:
                wanted.add(req)
    def with_extras(req):
        m = re.match(r"\s*([^<>=!~;\[ ]+)(?:\[([^\]]*)\])?", req)
        return _norm(m.group(1)), tuple(e.strip() for e in (m.group(2) or "").split(",") if e.strip())

    closure, seen, todo = set(), set(), [with_extras(r) for r in wanted]
    while todo:  # and everything those distributions require (with the extras asked for), as installed here
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        closure.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [with_extras(r) for r in reqs
                 if "extra ==" not in r or any(re.search(rf"extra == ['\"]{e}['\"]", r) for e in extra)]
    providers = metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    local = {f[:-3] for f in os.listdir(HERE) if f.endswith(".py")} | {"gatta_viz", "app_server"}
    missing = set()
    for f in os.listdir(HERE):
        if not f.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(open(os.path.join(HERE, f)).read())):
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
                if top in stdlib or top in local:
                    continue
                if not {_norm(d) for d in providers.get(top, [])} & closure:
                    missing.add(f"{top} ({f})")
    assert sorted(missing) == [], "tests import modules the test extra does not install"
    # torchcam for every Python the package supports
    assert re.search(r'requires-python = ">=3\.10"', text)
    assert "torchcam>=0.5.0; python_version >= '3.11'" in text and "python_version < '3.11'" in text
