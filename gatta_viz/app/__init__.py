"""The Streamlit app: a page that explains uploads, sample images and composed scenes with the library.

Shipped inside the package, so ``gatta-viz app`` serves it from a wheel as from a clone (whose
``app/streamlit_app.py`` runs the same page). One job per module:

    settings   the operator's settings (environment variables) and the page's fixed limits
    models     choosing a model: bundled, the operator's folder, an uploaded checkpoint (checked before building)
    pool       replicas of a model, so parallel sessions never share one model's hooks
    uploads    turning uploads, sample picks and preloaded files into named inputs, each error named
    composer   two-garment scenes from the sample garments (built on ``data.scenes.compose_items``)
    render     one input's page content, computed by the library's explain and drawn by its render layer
    text       the words on the page (legends that follow the controls, captions, the model's domain)
    dataset    the Dataset view: a map store from $GATTA_VIZ_STORE_DIR, chosen by name; filters, an image's stored
               maps, the q_avg embedding and class means
    page       the Streamlit layout (page and dataset are the modules that import streamlit)

Nothing here is needed to use the library; importing this package loads neither streamlit nor torch.
"""
from __future__ import annotations

import os

__all__ = ["PAGE"]

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "streamlit_page.py")  # what `streamlit run` runs
