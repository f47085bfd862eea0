"""Analysis views built on explanation records and traces: ``interactive`` (plotly layer slider and class bars),
``embedding`` (q_avg PCA, the paper's Fig. 2b), and the figures of the measurements: ``localization_plots``
(maps against garment masks), ``sanity_plots`` (parameter-randomisation checks), ``scene_plots`` (cue success on
two-garment scenes, uncued vs cued maps), ``metric_plots`` (noise curves, deletion/insertion curves).

Explanations are computed in :mod:`gatta_viz.compute` and drawn in :mod:`gatta_viz.render`; maps are the gain
map alpha x agreement by default (> 0 boosted by pass 2, < 0 suppressed), raw agreement, whose sign is a
convention of training, with ``gain=False``."""
