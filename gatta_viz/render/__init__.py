"""Render: explanation records to pictures and files. Nothing here runs a model or computes a map.

``fig3_layout`` (Fig. 3's geometry as typed objects) and ``fig3_text`` (its words), ``fig3`` (the figure, built
once, redrawn per record), ``bars`` (its dense-layer charts), ``images`` (colour a map, blend it over an image),
``outlines`` (the one outline model) and ``outline_draw`` (drawn with PIL or matplotlib), ``overlays`` (a record's
overlays), ``style`` (one colour language and its words), ``options`` (:class:`FigureOptions`), ``save``
(saving figures, the alpha chart), ``plotly_bars`` (interactive dense bars), ``write`` (the files of one
explanation, for the CLI and the app's downloads).
"""
