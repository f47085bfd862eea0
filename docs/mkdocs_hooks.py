"""mkdocs hook: writes the API and CLI reference pages from the code at build time (nothing copied by hand).

- ``api/<package>.md``: one section per module of ``gatta_viz._EXPORTS``, rendered by mkdocstrings from the
  docstrings, limited to the module's public names; ``api/index.md``: every public name, each linked to its entry
  (an autorefs link: a name that mkdocstrings did not render fails ``mkdocs build --strict``).
- ``cli.md``: every sub-command of ``gatta-viz`` with its usage, arguments, options, defaults and choices, read from
  the same argparse parsers that ``gatta-viz SUB --help`` prints.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import textwrap
from typing import Dict, List

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# the packages of the API reference, in the order of the layering (core < models < data < ... < metrics)
PACKAGES: Dict[str, str] = {
    "core": "The mechanism's equations, the two-pass wrapper for any CNN, traces, per-pass BatchNorm statistics, "
            "hook scoping.",
    "models": "Backbones, builders by name, checkpoint files and validation, the bundled weights, class cues.",
    "data": "Fashion-MNIST in memory, image folders streamed from disk, two-garment scenes, garments in clutter, "
            "image decoding, limits and preprocessing.",
    "training": "Export, recalibrate and class cues of checkpoints (training itself runs through `gatta-viz train`).",
    "compute": "Explanations as numbers: `explain`, `MapOptions`, the `Explanation` record, maps, cues, layer "
               "contributions, captum attributions, checks. Imports no matplotlib, plotly or PIL.",
    "render": "Pictures and files from explanation records: Fig. 3, overlays, outlines, colours and legends, saving, "
              "`FigureOptions`, the writer of an explanation's files.",
    "analysis": "Plotly views and q_avg embeddings.",
    "metrics": "Faithfulness (deletion/insertion, ROAD), localization on masks, parameter-randomisation checks, cue "
               "measurements on scenes.",
    "store": "A whole data set's maps in one chunked zarr store: compute_maps (one or many processes, resumable), "
             "open_maps and the MapStore reader.",
}


def exports() -> Dict[str, List[str]]:
    """``gatta_viz._EXPORTS``: module (relative to the package) -> its public names."""
    import gatta_viz
    return gatta_viz._EXPORTS  # noqa: SLF001 - the one table of public names


def package_of(module: str) -> str:
    return module.split(".")[0]


def api_page(package: str, table: Dict[str, List[str]]) -> str:
    lines = [f"# gatta_viz.{package}", "", PACKAGES[package], "",
             "Every name below is also available as `gatta_viz.NAME` (`import gatta_viz as gv; gv.NAME`).", ""]
    for module, names in table.items():
        if package_of(module) != package:
            continue
        lines += [f"## gatta_viz.{module}", "", f"::: gatta_viz.{module}", "    options:", "      members:"]
        lines += [f"        - {name}" for name in names]
        lines.append("")
    return "\n".join(lines)


def api_index(table: Dict[str, List[str]]) -> str:
    lines = ["# API reference", "",
             "`import gatta_viz as gv` gives every public name below (each imported on first use, so "
             "`import gatta_viz` stays light). The pages are grouped as the packages are, in the order of the "
             "layering: a package imports only those above it.", ""]
    for package, about in PACKAGES.items():
        lines += [f"## [{package}]({package}.md)", "", about, ""]
        lines += ["| name | module |", "|---|---|"]
        for module, names in table.items():
            if package_of(module) == package:
                lines += [f"| [`{n}`][gatta_viz.{module}.{n}] | `gatta_viz.{module}` |" for n in names]
        lines.append("")
    return "\n".join(lines)


def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    text = action.help
    if text.startswith("(default:"):  # added by with_defaults_in_help; the table has its own default column
        return ""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = parser.prog
    for key in ("choices",):
        if params.get(key) is not None:
            params[key] = ", ".join(map(str, params[key]))
    try:
        return text % params
    except (KeyError, TypeError, ValueError):
        return text


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS:
        return ""
    value = action.default
    if isinstance(value, (list, tuple)):
        value = " ".join(map(str, value))
    return f"`{value}`" if str(value) != "" else '`""`'


def command_parsers() -> Dict[str, argparse.ArgumentParser]:
    """Each sub-command's parser, built exactly as ``gatta-viz SUB`` builds it."""
    from gatta_viz.cli import COMMANDS, HelpFormatter, with_defaults_in_help
    parsers = {}
    for name, (modname, help_text) in COMMANDS.items():
        parser = argparse.ArgumentParser(prog=f"gatta-viz {name}", formatter_class=HelpFormatter)
        module = importlib.import_module(modname)
        parser = module.build_parser(parser) or parser
        with_defaults_in_help(parser)
        parser.description = parser.description or (module.__doc__ or help_text).strip()
        parsers[name] = parser
    return parsers


def cli_page() -> str:
    from gatta_viz.cli import COMMANDS
    lines = ["# CLI reference", "",
             "`gatta-viz SUB-COMMAND [OPTIONS]` (also `python -m gatta_viz.cli SUB-COMMAND`). This page is generated "
             "from the same parsers that `gatta-viz SUB-COMMAND --help` prints.", "",
             "A mistake in the arguments stops a command before it writes anything, with one line naming the problem "
             "and exit code 2; Ctrl-C stops with one line and exit code 130. JSON outputs are strict (a non-finite "
             "number is written as `null`). A checkpoint path works wherever a model name does.", "",
             "| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#gatta-viz-{name}) | {cell(help_text)} |" for name, (_, help_text) in COMMANDS.items()]
    lines.append("")
    for name, parser in command_parsers().items():
        wide = argparse.HelpFormatter(parser.prog, width=100_000)  # one line: argparse's wrapping can drop parts
        wide.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)  # noqa: SLF001
        lines += [f"## gatta-viz {name} {{#gatta-viz-{name}}}", "", parser.description or "", "", "```text",
                  *textwrap.wrap(" ".join(wide.format_help().split()), 100, subsequent_indent=" " * 8,
                                 break_on_hyphens=False, break_long_words=False), "```", ""]
        positionals = [a for a in parser._actions if not a.option_strings]  # noqa: SLF001
        options = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS  # noqa: SLF001
                   and not isinstance(a, argparse._HelpAction)]  # noqa: SLF001
        if positionals:
            lines += ["| argument | what it is |", "|---|---|"]
            lines += [f"| `{a.metavar or a.dest}` | {cell(_help(parser, a))} |" for a in positionals]
            lines.append("")
        if options:
            lines += ["| option | default | what it does |", "|---|---|---|"]
            for a in options:
                flags = ", ".join(f"`{s}`" for s in a.option_strings)
                if a.nargs != 0:
                    metavar = a.metavar or (("{" + ",".join(map(str, a.choices)) + "}") if a.choices else
                                            a.dest.upper())
                    flags += f" `{metavar if isinstance(metavar, str) else ' '.join(metavar)}`"
                lines.append(f"| {cell(flags)} | {cell(_default(a))} | {cell(_help(parser, a))} |")
            lines.append("")
    return "\n".join(lines)


ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):<code>(~?)([\w.]+)</code>")


def sphinx_roles_to_links(html: str, public: Dict[str, str]) -> str:
    """Docstrings' Sphinx roles (``:func:`gatta_viz.x.f```, ``:class:`~Name```) as links where the object is
    documented (a public name or a full ``gatta_viz.`` path), else as code; never the role's text."""
    def link(match) -> str:
        tilde, name = match.groups()
        if name.startswith("gatta_viz."):
            target = name
        else:  # a bare public name links to its entry; a relative dotted one ("Explanation.to_npz") stays code
            target = public.get(name) if "." not in name else None
        shown = name.split(".")[-1] if tilde else name
        if not target:
            return f"<code>{shown}</code>"
        return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'
    return ROLE.sub(link, html)


def on_page_content(html, page, config, files):
    """Rewrite Sphinx roles left in rendered docstrings (mkdocstrings reads them as plain text)."""
    if ":" not in html:
        return html
    public = {name: f"gatta_viz.{module}.{name}" for module, names in exports().items() for name in names}
    return sphinx_roles_to_links(html, public)


def on_files(files, config):
    """Add the generated pages to the site (called by mkdocs before the navigation is built)."""
    table = exports()
    pages = {f"api/{package}.md": api_page(package, table) for package in PACKAGES}
    pages["api/index.md"] = api_index(table)
    pages["cli.md"] = cli_page()
    listed = {m for m in table if package_of(m) in PACKAGES}
    missing = sorted(set(table) - listed)
    if missing:
        raise ValueError(f"public modules outside the API pages' packages: {missing}; add their package to PACKAGES")
    for path, content in pages.items():
        files.append(File.generated(config, path, content=content))
    return files
