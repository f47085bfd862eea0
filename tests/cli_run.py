"""Helpers for tests of the command line: run ``gatta-viz`` in this process, read JSON as strict parsers do."""
import json

from gatta_viz.cli import main


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of ``gatta-viz ARGV`` run in this process (a parse error's SystemExit caught)."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def strict_load(path):
    """``json.load`` that refuses bare NaN/Infinity, as strict JSON parsers do."""
    def refuse(name):
        raise ValueError(f"{path}: bare {name} is not JSON")

    with open(path) as f:
        return json.load(f, parse_constant=refuse)
