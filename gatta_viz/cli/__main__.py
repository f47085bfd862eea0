"""``python -m gatta_viz.cli ...`` is ``gatta-viz ...``."""
import sys

from . import main

sys.exit(main())
