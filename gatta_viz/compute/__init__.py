"""Compute: explanations of images as records, without drawing (no matplotlib, plotly or PIL drawing here).

``options`` (:class:`MapOptions`, what to compute), ``explain`` (``explain`` / ``explain_batch`` for GAttA models
and plain CNNs), ``record`` (the :class:`Explanation` with its uncued and cued results), ``export`` (its JSON
summary and .npz), ``maps`` (upsampling, normalisation), ``arrays`` (images as arrays), ``cue`` (top-down cues:
what a cue option means as a query), ``contributions`` (layer statistics, ablations), ``attributions`` (captum
Grad-CAM, Integrated Gradients, Saliency; captum is imported only when one is asked for), ``checks`` (input checks,
untrained-model warnings). Figures, overlays and files are made from records by :mod:`gatta_viz.render`.
"""
