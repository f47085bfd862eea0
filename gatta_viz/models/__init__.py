"""Models: plain backbones (``backbones``), builders by name (``builders``), checkpoint files and the bundled
weights (``checkpoint``, ``weights/``)."""
