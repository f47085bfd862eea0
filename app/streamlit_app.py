"""gatta_viz Streamlit app, as a clone runs it: upload images (or compose a two-garment scene) and inspect GAttA
attention across layers, without and under a top-down cue. The page itself is in the package
(``gatta_viz/app/``), so an installed ``gatta-viz app`` serves the same page.

Start it with ``gatta-viz app`` (listens on 127.0.0.1 only), or directly with::

    streamlit run app/streamlit_app.py --server.address 127.0.0.1

Without ``--server.address`` Streamlit listens on every network interface. To share the app on a network,
pass the address on purpose (``gatta-viz app --address 0.0.0.0``) and put it behind something that
authenticates users. Settings (environment variables) are listed in ``gatta_viz/app/page.py``.
"""
from gatta_viz.app.page import main

main()
