"""A whole data set's maps in one chunked zarr store: written once (by one or many processes, resumable), read
lazily by every later analysis.

    layout       array names, attributes, the fingerprint and the refusal message
    sources      image sources read chunk by chunk (named data sets, image folders, folders of files)
    zarr_io      creating, checking and opening stores
    distributed  ranks, each process's chunks, barriers
    write        :func:`compute_maps` and :class:`MapsConfig`
    read         :func:`open_maps` and :class:`MapStore`

No plotting library is imported here.
"""
from __future__ import annotations

__all__ = ["MapsConfig", "MapStore", "compute_maps", "open_maps", "dataset_source", "folder_source", "MapSource"]


def __getattr__(name: str):
    import importlib

    where = {"MapsConfig": "write", "compute_maps": "write", "MapStore": "read", "open_maps": "read",
             "dataset_source": "sources", "folder_source": "sources", "MapSource": "sources"}
    if name not in where:
        raise AttributeError(f"module 'gatta_viz.store' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{where[name]}", __name__), name)
