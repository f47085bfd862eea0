"""Start-up cost: `gatta-viz --help` and `import gatta_viz` in a fresh interpreter (target: --help <= 1.5 s on an
idle machine), and what the first use of each layer of the package costs.

Run:  .venv/bin/python benchmarks/startup.py [--repeats 5]
Prints a markdown table of median wall times (s) over fresh processes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import List

BIN = os.path.dirname(sys.executable)
CASES = [
    ("gatta-viz --help", [os.path.join(BIN, "gatta-viz"), "--help"]),
    ("python -c 'import gatta_viz'", [sys.executable, "-c", "import gatta_viz"]),
    ("gv.GAttANet (core: torch)", [sys.executable, "-c", "import gatta_viz as gv; gv.GAttANet"]),
    ("gv.load_model (models)", [sys.executable, "-c", "import gatta_viz as gv; gv.load_model"]),
    ("gv.explain (compute: no matplotlib, no captum)", [sys.executable, "-c", "import gatta_viz as gv; gv.explain"]),
    ("gv.fig3 (render: matplotlib)", [sys.executable, "-c", "import gatta_viz as gv; gv.fig3"]),
    ("gv.gradcam (compute: captum)", [sys.executable, "-c", "import gatta_viz as gv; gv.gradcam"]),
    ("gatta_viz.app.page (the app's page: streamlit)", [sys.executable, "-c", "import gatta_viz.app.page"]),
]


def main(argv: List[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print("| command | median wall time (s) |\n|---|---:|")
    for label, cmd in CASES:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        print(f"| {label} | {statistics.median(times):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
