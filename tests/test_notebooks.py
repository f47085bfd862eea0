"""The notebooks run offline, top to bottom, and produce their figures and checks."""
import os
import time

import nbformat
import pytest
from nbclient import NotebookClient

NB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")


@pytest.mark.parametrize("name, marker, min_images", [
    ("01_quickstart.ipynb", "QUICKSTART OK", 2),
    ("02_layer_contributions.ipynb", "CONTRIBUTIONS OK", 2),
    ("03_captum_and_faithfulness.ipynb", "ATTRIBUTIONS OK", 2),
])
def test_notebook_runs_and_shows_results(name, marker, min_images, tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # set by Streamlit when the app tests ran in this process
    nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
    t = time.time()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert time.time() - t < 180, f"{name} took {time.time() - t:.0f} s (limit 3 minutes)"
    texts, images, errors = [], 0, []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(out.get("ename"))
            texts.append(out.get("text", "") + str(out.get("data", {}).get("text/plain", "")))
            images += "image/png" in out.get("data", {})
    assert not errors
    assert any(marker in s for s in texts)
    assert images >= min_images
