"""The file ``gatta-viz app`` hands to ``streamlit run`` (Streamlit runs a script, not a module)."""
from gatta_viz.app.page import main

main()
