"""Analysis: maps to pictures and tables. ``heatmaps`` and ``overlays`` (arrays), ``figures`` and
``metric_plots`` (matplotlib), ``interactive`` (plotly), ``contributions`` (layer statistics, ablations),
``embedding`` (q_avg PCA), ``attributions`` (captum), ``explanation`` (everything for one image)."""
