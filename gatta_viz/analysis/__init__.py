"""Analysis: maps to pictures and tables. ``heatmaps`` and ``overlays`` (arrays), ``figures`` and
``metric_plots`` (matplotlib), ``interactive`` (plotly), ``contributions`` (layer statistics, ablations),
``embedding`` (q_avg PCA), ``attributions`` (captum), ``explanation`` (everything for one image or a batch),
``style`` (one colour language and the labels every view uses), ``checks`` (input checks, untrained-model warnings).

Maps are the gain map alpha x agreement by default (> 0 boosted by pass 2, < 0 suppressed); raw agreement,
whose sign is a convention of training, is available everywhere with ``gain=False``."""
