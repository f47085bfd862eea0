"""Size limits that keep the code readable: no module over 450 lines and no function over 100 lines, in the
package (gatta_viz/) and the app a clone runs (app/). Measured from the source with ast, docstrings included."""
import ast
import os
from typing import List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 100


def too_long(path: str, source: str) -> List[str]:
    """Every limit ``source`` (the file ``path``) breaks, as messages naming the module or function and its length."""
    bad = []
    lines = source.count("\n") + (0 if source.endswith("\n") or not source else 1)
    if lines > MAX_MODULE_LINES:
        bad.append(f"{path}: {lines} lines (limit {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                bad.append(f"{path}:{node.lineno} {node.name}(): {n} lines (limit {MAX_FUNCTION_LINES})")
    return bad


def python_files(*folders: str) -> List[str]:
    out = []
    for folder in folders:
        for dirpath, _, files in os.walk(os.path.join(REPO, folder)):
            out += [os.path.join(dirpath, f) for f in sorted(files) if f.endswith(".py")]
    return sorted(out)


def test_no_module_or_function_in_the_package_or_the_app_is_too_long():
    files = python_files("gatta_viz", "app")
    assert any(f.endswith(os.path.join("gatta_viz", "compute", "explain.py")) for f in files)
    bad = [m for f in files for m in too_long(os.path.relpath(f, REPO), open(f).read())]
    assert bad == []


def test_the_checker_counts_modules_and_functions():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long_function = f"def f():\n{body}\n"
    assert too_long("m.py", long_function) == [f"m.py:1 f(): {MAX_FUNCTION_LINES + 1} lines (limit 100)"]
    assert too_long("m.py", "def f():\n    return 1\n") == []
    module = "x = 1\n" * (MAX_MODULE_LINES + 1)
    assert too_long("m.py", module) == [f"m.py: {MAX_MODULE_LINES + 1} lines (limit 450)"]
    assert too_long("m.py", "x = 1\n" * MAX_MODULE_LINES) == []
