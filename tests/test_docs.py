"""The documentation site builds with ``mkdocs build --strict``, documents every public name and every CLI option, and
shows the notebooks with their stored outputs; a broken link, a missing object or a bad cross-reference fails it."""
import argparse
import html
import importlib
import os
import re
import subprocess
import sys
import textwrap

import pytest

for _module in ("mkdocs", "mkdocstrings_handlers.python", "mkdocs_jupyter", "material"):
    if os.environ.get("CI"):  # CI installs requirements.txt, which pins them: missing there is a failure
        importlib.import_module(_module)
    else:  # elsewhere: pip install ".[docs]"
        pytest.importorskip(_module, reason='the docs tools: pip install ".[docs]"')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NO_MKDOCS_2_WARNING": "1",
       "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def mkdocs_build(config: str, site_dir: str, cwd: str = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", config, "-d", site_dir],
                          cwd=cwd, capture_output=True, text=True, timeout=600, env=ENV)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    result = mkdocs_build(os.path.join(REPO, "mkdocs.yml"), str(out))
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return out


def page(site, path: str) -> str:
    with open(os.path.join(site, path, "index.html"), encoding="utf-8") as f:
        return f.read()


def public_names():
    import gatta_viz
    return [(module, name) for module, names in gatta_viz._EXPORTS.items() for name in names]  # noqa: SLF001


def test_the_site_builds_strict_and_leaves_the_repository_alone(site):
    assert os.path.isfile(os.path.join(site, "index.html"))
    for path in ("getting-started", "concepts", "troubleshooting", "RESULTS", "cli", "api", "howto/fine-tune"):
        assert os.path.isfile(os.path.join(site, path, "index.html")), path
    assert not os.path.exists(os.path.join(REPO, ".cache", "mkdocs-jupyter")), "the notebook cache was written"


def test_every_public_name_has_an_entry_on_its_package_page(site):
    missing = []
    for module, name in public_names():
        text = page(site, f"api/{module.split('.')[0]}")
        if f'id="gatta_viz.{module}.{name}"' not in text:
            missing.append(f"gatta_viz.{module}.{name}")
    assert not missing, f"public names without an API entry: {missing}"
    compute = page(site, "api/compute")
    entry = compute.split('id="gatta_viz.compute.explain.explain_batch"', 1)[1][:20000]
    assert "Args" in entry or "Parameters" in entry  # the docstring's sections are rendered, not just the name
    roles = [p for p in ("core", "compute", "render", "metrics") if re.search(r":(func|class|meth):<", page(site, f"api/{p}"))]
    assert not roles, f"Sphinx roles left as text on the API pages of {roles}"
    assert 'href="#gatta_viz.compute.cue.resolve_cue"' in compute  # a docstring's :func: role became a link


def test_the_api_index_links_every_public_name(site):
    index = page(site, "api")
    for module, name in public_names():
        package = module.split(".")[0]
        assert f'href="../api/{package}/#gatta_viz.{module}.{name}"' in index or \
            f'href="{package}/#gatta_viz.{module}.{name}"' in index, f"{module}.{name} not linked from the API index"


def command_parsers():
    """Each sub-command's parser, built as ``gatta-viz SUB`` builds it (independently of the docs hook)."""
    from gatta_viz.cli import COMMANDS
    parsers = {}
    for name, (modname, _) in COMMANDS.items():
        parser = argparse.ArgumentParser(prog=f"gatta-viz {name}")
        parsers[name] = importlib.import_module(modname).build_parser(parser) or parser
    return parsers


def test_the_cli_reference_lists_every_sub_command_option_and_default(site):
    text = page(site, "cli")
    parsers = command_parsers()
    assert len(parsers) >= 9
    for name, parser in parsers.items():
        assert f'id="gatta-viz-{name}"' in text, f"no section for gatta-viz {name}"
        section = text.split(f'id="gatta-viz-{name}"', 1)[1]
        following = [n for n in parsers if n != name and f'id="gatta-viz-{n}"' in section]
        for n in following:
            section = section.split(f'id="gatta-viz-{n}"', 1)[0]
        cells = html.unescape(re.sub(r"<[^>]+>", " ", section))
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._HelpAction):  # noqa: SLF001
                continue
            for flag in action.option_strings or [action.metavar or action.dest]:
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", cells), f"gatta-viz {name}: {flag} missing"
            default = action.default
            if action.option_strings and action.nargs != 0 and default not in (None, "", argparse.SUPPRESS) \
                    and not isinstance(default, (list, tuple)):
                table = cells.split("what it does", 1)[1]  # the options table (after the description and usage)
                flag = re.search(rf"(?<![\w-]){re.escape(action.option_strings[-1])}(?![\w-])", table)
                row = table[flag.end():flag.end() + 400]
                assert str(default) in row, f"gatta-viz {name} {action.option_strings[-1]}: default {default} missing"


def test_the_notebooks_are_rendered_with_their_stored_outputs(site):
    names = sorted(f[:-6] for f in os.listdir(os.path.join(REPO, "notebooks")) if f.endswith(".ipynb"))
    assert len(names) >= 5
    for name in names:
        text = page(site, f"notebooks/{name}")
        assert "data:image/png;base64," in text or "<img" in text, f"{name}: no stored figure"
        assert "jp-OutputArea" in text or "output_area" in text, f"{name}: no stored output"


# A one-page site with the same plugins: fault-free it builds; each fault alone fails --strict.
GOOD = textwrap.dedent("""\
    # Page

    See [the other page](other.md) and [`explain`][gatta_viz.compute.explain.explain].

    ::: gatta_viz.compute.explain
        options:
          members: [explain]
    """)
FAULTS = {
    "broken link": ("[the other page](other.md)", "[a page that does not exist](missing.md)"),
    "missing object": ("::: gatta_viz.compute.explain", "::: gatta_viz.compute.no_such_module"),
    "bad cross-reference": ("[gatta_viz.compute.explain.explain]", "[gatta_viz.compute.explain.no_such_function]"),
}


def small_site(tmp_path, text: str) -> subprocess.CompletedProcess:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text(text)
    (docs / "other.md").write_text("# Other\n")
    import yaml
    with open(os.path.join(REPO, "mkdocs.yml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)  # the project's own markdown and mkdocstrings settings, one page
    plugins = [p for p in config["plugins"] if isinstance(p, dict) and "mkdocstrings" in p or p == "autorefs"]
    for p in plugins:
        if isinstance(p, dict):
            p["mkdocstrings"]["handlers"]["python"]["paths"] = [REPO]
    small = {"site_name": "t", "docs_dir": "docs", "markdown_extensions": config["markdown_extensions"],
             "plugins": plugins}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(small))
    return mkdocs_build(str(tmp_path / "mkdocs.yml"), str(tmp_path / "out"), cwd=str(tmp_path))


def test_a_fault_free_page_builds(tmp_path):
    result = small_site(tmp_path, GOOD)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_strict_build_fails_on(fault, tmp_path):
    old, new = FAULTS[fault]
    assert old in GOOD
    result = small_site(tmp_path, GOOD.replace(old, new))
    assert result.returncode != 0, f"{fault} did not fail the strict build:\n{result.stderr[-2000:]}"


def modules_with_examples():
    out = []
    for folder, _, files in os.walk(os.path.join(REPO, "gatta_viz")):
        for f in sorted(files):
            path = os.path.join(folder, f)
            if f.endswith(".py") and ">>>" in open(path, encoding="utf-8").read():
                out.append(os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__"))
    return sorted(out)


EXAMPLE_MODULES = modules_with_examples()


def test_docstring_examples_exist():
    assert {"gatta_viz.compute.explain", "gatta_viz.render.fig3"} <= set(EXAMPLE_MODULES)


@pytest.mark.parametrize("module", EXAMPLE_MODULES)
def test_docstring_examples_run(module, tmp_path):
    """The ``Examples:`` of public docstrings run as written and print what they show (doctest)."""
    code = (f"import doctest, importlib, sys; r = doctest.testmod(importlib.import_module({module!r}), "
            f"optionflags=doctest.ELLIPSIS); print(r); sys.exit(1 if r.failed or not r.attempted else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**ENV, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
