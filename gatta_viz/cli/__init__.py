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
    "cues": ("gatta_viz.cli.cues", "store one top-down query per class with a GAttA checkpoint"),
    "export": ("gatta_viz.cli.export", "strip a run's checkpoint of its resume state, to ship or bundle it"),
    "evaluate": ("gatta_viz.cli.evaluate", "accuracy, noise robustness and pass-1 vs pass-2 changes of checkpoints"),
    "explain": ("gatta_viz.cli.explain", "write figures, overlays, raw maps and a JSON summary per image"),
    "faithfulness": ("gatta_viz.cli.faithfulness", "deletion/insertion AUC of gain/agreement maps vs Grad-CAM vs random"),
    "maps": ("gatta_viz.cli.maps", "a whole data set's maps, q_avg and logits into one zarr store (resumable; torchrun)"),
    "app": ("gatta_viz.cli.app", "start the Streamlit app"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, except flags (on/off switches) and options whose default is
    None (which says nothing); descriptions keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        silent = action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS
        if "%(default)" in help_text or silent:
            return help_text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            help_text += " (default: %(default)s)"
        return help_text


def with_defaults_in_help(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give options that have no help text one that shows their default, so ``--help`` lists every default.

    (argparse prints nothing at all for an option without help, formatter or not.)
    """
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public way to list actions
        if action.help is None and action.option_strings and action.nargs != 0 and action.default is not None \
                and action.default is not argparse.SUPPRESS:
            action.help = "(default: %(default)s)"
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``gatta-viz``. Returns the exit code: 0, 2 for a user's mistake (one line on stderr, no
    traceback; also what a parse error exits with), 130 for Ctrl-C (one line: a sub-command may supply its own by
    raising :class:`gatta_viz.cli.args.Interrupted`)."""
    from .args import Parser, UsageError, report_interrupt

    parser = Parser(prog="gatta-viz", description="GAttANet interpretability toolkit")
    sub = parser.add_subparsers(dest="command", required=True)  # sub-parsers are Parsers too: one-line errors
    argv = list(sys.argv[1:] if argv is None else argv)
    modules = {}
    for name, (modname, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, formatter_class=HelpFormatter)
        if argv and argv[0] == name:  # import only the module that runs
            modules[name] = importlib.import_module(modname)
            with_defaults_in_help(modules[name].build_parser(sp) or sp)
            if sp.description is None:
                sp.description = (modules[name].__doc__ or help_text).strip()
    prog = f"gatta-viz {argv[0]}" if argv and argv[0] in COMMANDS else "gatta-viz"
    try:
        args = parser.parse_args(argv)
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt as e:  # Ctrl-C: one line (the sub-command's own via args.Interrupted), exit 130
        return report_interrupt(prog, e)
    except UsageError as e:  # a user's mistake found at run time: one line, exit 2
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
