"""The ``gatta-viz`` command: one sub-command per job, each implemented in its own module."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

# sub-command -> (module, help). Each module defines build_parser(parser) and run(args) -> int.
COMMANDS = {
    "demo": ("gatta_viz.cli.demo", "trace the bundled default model on sample images and save figures (the main job)"),
    "train": ("gatta_viz.cli.train", "train a GAttA model or its baseline"),
    "recalibrate": ("gatta_viz.cli.recalibrate", "re-estimate BatchNorm statistics of a checkpoint, each pass its own"),
    "export": ("gatta_viz.cli.export", "strip a run's checkpoint of its resume state, to ship or bundle it"),
    "evaluate": ("gatta_viz.cli.evaluate", "accuracy, noise robustness and pass-1 vs pass-2 changes of checkpoints"),
    "explain": ("gatta_viz.cli.explain", "write figures, overlays, raw maps and a JSON summary per image"),
    "faithfulness": ("gatta_viz.cli.faithfulness", "deletion/insertion AUC of agreement maps vs Grad-CAM vs random"),
    "app": ("gatta_viz.cli.app", "start the Streamlit app"),
}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``gatta-viz``. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="gatta-viz", description="GAttANet interpretability toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    modules = {}
    for name, (modname, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text)
        if argv and argv[0] == name:  # import only the module that runs
            modules[name] = importlib.import_module(modname)
            modules[name].build_parser(sp)
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
