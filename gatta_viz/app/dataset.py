"""The page's Dataset view: a map store (``gatta-viz maps --out``) from the operator's folder
(``$GATTA_VIZ_STORE_DIR``), chosen by name (never a path). Its images are listed by the table's scalars (sorted and
filtered), any image's maps are shown as the store holds them (each layer at its own resolution, enlarged), with
the image itself when its data set can be re-loaded here; the q_avg embedding and the mean gain map per class on
request. Nothing runs a model: every number is read from the store.
"""
from __future__ import annotations

import io
import os
import traceback
from typing import Any, List, Optional, Tuple

import numpy as np
import pandas as pd
import streamlit as st
import torch

from ..compute.dataset_views import (TableQuery, class_mean_maps, q_avg_embedding_from_store, query_table,
                                     sort_columns, stored_image, umap_available, with_class_names)
from ..compute.record import topk
from ..render.dataset_figures import DISPLAY_SIDE, class_means_figure, dataset_embedding_figure, enlarge, map_tiles
from ..render.images import colorbar_strip
from ..render.plotly_bars import dense_bars
from ..render.style import DEFAULT_CMAP, map_legend
from ..store.read import MapStore, open_maps
from . import settings, text
from .models import _public_error
from .render import DRAW_LOCK
from .uploads import md_escape

__all__ = ["LISTED", "list_stores", "open_store", "store_stamp", "main"]

LISTED = 200  # images listed in the table and offered in the image picker
CLASS_ROWS = 20  # class-mean maps drawn at most (a row each), unless the True class filter picks others
ANY, RIGHT, WRONG = "right or wrong", "right", "wrong"
STORE_ERRORS = (ValueError, FileNotFoundError, KeyError, OSError)


def list_stores(folder: Optional[str] = None) -> List[str]:
    """Names (never paths) of the zarr stores directly in the store folder (``$GATTA_VIZ_STORE_DIR``), sorted."""
    folder = folder or settings.store_dir()
    if not folder:
        return []
    return sorted(n for n in os.listdir(folder) if not n.startswith(".")
                  and os.path.isfile(os.path.join(folder, n, "zarr.json")))


def _path_of(name: str) -> str:
    """The server path of a listed store (ValueError for any other name, paths included)."""
    name = str(name).strip()
    names = list_stores()
    if name not in names:
        raise ValueError(f"unknown store {name!r}" + (f": choose one of {', '.join(names)}" if names else
                                                      ": the store folder holds none"))
    return os.path.join(settings.store_dir(), name)


def open_store(name: str) -> MapStore:
    """A store of the store folder, by name only.

    Raises:
        ValueError: an unknown name, or a folder that is not a readable map store (the message names the store,
            never the server path).
    """
    path = _path_of(name)
    try:
        ms = open_maps(path)
        len(ms), ms.layers, ms.classes  # noqa: B018 - attributes every view needs, checked once here
        return ms
    except STORE_ERRORS as e:
        raise _public_error(e, path, name) from None


def store_stamp(name: str) -> Tuple[Any, ...]:
    """Changes when the store is rewritten or gains chunks (its metadata and its ``done`` flags), or the folder
    changes: a cache key (never shown)."""
    path = _path_of(name)
    stamps = [os.stat(os.path.join(path, "zarr.json")).st_mtime_ns]
    for root, _, files in os.walk(os.path.join(path, "done")):
        stamps += [os.stat(os.path.join(root, f)).st_mtime_ns for f in files]
    return (path, len(stamps), max(stamps))


@st.cache_data(show_spinner="Reading the store's table...", max_entries=4)
def get_table(name: str, stamp: tuple) -> pd.DataFrame:
    """The store's table (read chunk by chunk, no map), cached per store version."""
    return open_store(name).table()


@st.cache_resource(show_spinner="Loading the images...", max_entries=2)
def get_source(name: str, stamp: tuple) -> Tuple[Any, str]:
    """(the store's image source, "") or (None, why it cannot be re-loaded here)."""
    ms = open_store(name)
    try:
        return ms.source(), ""
    except (ValueError, FileNotFoundError, OSError) as e:
        folder = str((ms.attrs.get("dataset") or {}).get("folder") or "")
        return None, str(e).replace(folder, os.path.basename(folder.rstrip("/")) or "its folder") if folder else str(e)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    with DRAW_LOCK:
        fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


@st.cache_data(show_spinner="Embedding q_avg...", max_entries=8)
def get_embedding(name: str, stamp: tuple, method: str, n: int) -> Tuple[bytes, str]:
    """(the embedding figure as PNG, the method used)."""
    emb = q_avg_embedding_from_store(open_store(name), method, n=n)
    return _png(dataset_embedding_figure(emb)), emb.method


@st.cache_data(show_spinner="Averaging the maps per class...", max_entries=8)
def get_class_means(name: str, stamp: tuple, by: str, rows: Optional[tuple], classes: Optional[tuple]) -> bytes:
    """The class-mean figure as PNG (``rows``: only these store rows, ``classes``: only these rows of the figure;
    None: all)."""
    ms = open_store(name)
    mask = None
    if rows is not None:
        mask = np.zeros(len(ms), dtype=bool)
        mask[list(rows)] = True
    return _png(class_means_figure(class_mean_maps(ms, by=by, mask=mask), classes=classes))


def _reset_filters(name: str) -> None:
    """Another store: its own classes and columns, so the filters start afresh."""
    if st.session_state.get("ds_for_store") == name:
        return
    for key in ("ds_changed", "ds_classes", "ds_pred", "ds_correct", "ds_sort", "ds_desc", "ds_row"):
        st.session_state.pop(key, None)
    st.session_state["ds_for_store"] = name


def sidebar_query(ms: MapStore, table: pd.DataFrame) -> TableQuery:
    """The filters and the order, as a :class:`TableQuery`."""
    sb = st.sidebar
    changed = sb.checkbox("Only images whose prediction pass 2 changed", key="ds_changed")
    classes = sb.multiselect("True class", ms.classes, key="ds_classes")
    predicted = sb.multiselect("Pass-2 prediction", ms.classes, key="ds_pred")
    correct = sb.radio("Pass 2 is", [ANY, RIGHT, WRONG], key="ds_correct", horizontal=True)
    columns = sort_columns(table)
    sort_by = sb.selectbox("Sort by", columns, index=columns.index("index") if "index" in columns else 0,
                           key="ds_sort", help="mean_gain:LAYER is the image's mean α × agreement at that layer, "
                                               "boosted:LAYER the share of its positions that pass 2 boosts.")
    desc = sb.checkbox("Largest first", key="ds_desc")
    return TableQuery(changed_only=changed, classes=tuple(classes), predicted=tuple(predicted),
                      correct=None if correct == ANY else correct == RIGHT, sort_by=sort_by, descending=desc)


def describe(ms: MapStore, name: str) -> None:
    """What the store holds: model, data set, images, layers and alphas; a warning when it is incomplete."""
    a = ms.attrs
    ds, model = a.get("dataset") or {}, a.get("model") or {}
    alphas = ", ".join(f"{k} {float(v):+.3f}" for k, v in (a.get("alphas") or {}).items())
    st.markdown(f"**{md_escape(name)}**: {len(ms):,} images of {md_escape(str(ds.get('name')))} "
                f"({md_escape(str(ds.get('split')))}), model {md_escape(str(model.get('name')))}; "
                f"α per layer: {alphas}")
    if not ms.complete:
        st.warning("This store is incomplete (its writer has not finished): only the written chunks are listed.")


def _image_label(table: pd.DataFrame, classes: List[str]):
    names = list(classes)

    def fmt(row: int) -> str:
        r = table.loc[row]
        true = names[int(r["label"])] if 0 <= int(r["label"]) < len(names) else "?"
        return (f"row {row} · #{int(r['index'])} · {true}: {names[int(r['pred_pass1'])]} → "
                f"{names[int(r['pred_pass2'])]}")
    return fmt


def show_image(ms: MapStore, name: str, stamp: tuple, row: int) -> None:
    """One image: itself (when re-loadable), both passes' top classes, each layer's map and the dense gains."""
    img = stored_image(ms, row)
    classes = ms.classes
    cols = st.columns(3)
    src, why = get_source(name, stamp)
    if src is not None:
        pixels = np.asarray(src.shown(img.index), dtype=np.float32)
        pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
        cols[0].image(enlarge(np.clip(pixels, 0, 1), DISPLAY_SIDE), caption=f"image #{img.index}", clamp=True)
    else:
        cols[0].caption(f"The image cannot be shown here: {md_escape(why, 300)}")
    top1 = topk(torch.from_numpy(img.logits_pass1), classes, 3)
    top2 = topk(torch.from_numpy(img.logits_pass2), classes, 3)
    cols[1].markdown(text.predictions_md("Pass 1 (no attention)", top1))
    cols[2].markdown(text.predictions_md("Pass 2 (model output)", top2))
    if img.changed:
        cols[2].caption("global attention changed the prediction")
    joint = st.checkbox("One colour scale for all layers", key="ds_joint")
    legend, bar = st.columns([3, 1])
    legend.markdown(map_legend(gain=True, signed=True, joint=joint) + "; each layer at its own resolution, enlarged.")
    bar.image(colorbar_strip(DEFAULT_CMAP, True), caption="−scale … 0 … +scale", width="stretch")
    tiles = map_tiles(img, joint=joint)
    for col, (layer, (tile, scale)) in zip(st.columns(len(tiles)), tiles.items()):
        h, w = img.maps[layer].shape
        col.image(tile, caption=f"α × agreement {layer} ({h}×{w}), α={img.alphas.get(layer, float('nan')):+.3f}, "
                                f"scale ±{scale:.3g}", width="stretch")
    for layer, g in img.dense.items():
        st.plotly_chart(dense_bars(layer, 1 + g, classes, top2[0]["index"], "gain"), key=f"ds-bars-{layer}")


def show_views(ms: MapStore, name: str, stamp: tuple, shown: pd.DataFrame, query: TableQuery) -> None:
    """The q_avg embedding and the class-mean maps, each computed when asked for (then cached)."""
    with st.expander("q_avg embedding (the paper's Fig. 2b)"):
        methods = (["umap"] if umap_available() else []) + ["pca"]
        method = st.radio("Method", methods, key="ds_method", horizontal=True,
                          format_func=lambda m: "UMAP (as the paper)" if m == "umap" else "PCA (instant)",
                          help="UMAP as the paper (its first run in a server compiles for up to a minute); PCA is "
                               "instant. Without umap-learn installed, PCA only.")
        n = st.number_input("Images (a random sample)", 3, max(3, len(ms)), min(2000, max(3, len(ms))),
                            key="ds_embed_n")
        if st.button("Compute the embedding", key="ds_embed_go"):
            st.session_state["ds_embed"] = (name, stamp, method, int(n))
        if st.session_state.get("ds_embed") == (name, stamp, method, int(n)):
            png, used = get_embedding(name, stamp, method, int(n))
            st.image(png, caption=f"{used.upper()} of q_avg", width="stretch")
    with st.expander("Mean gain map per class"):
        labelled = bool((shown["label"] >= 0).any()) if len(shown) else False
        by = st.radio("Class of an image", ["label", "pred_pass2"], key="ds_by", horizontal=True,
                      format_func=lambda b: "true class" if b == "label" else "pass-2 prediction",
                      index=0 if labelled else 1)
        only = st.checkbox("Only the images the filters keep", key="ds_means_filtered")
        rows = tuple(int(r) for r in shown.index) if only else None
        if st.button("Compute the class means", key="ds_means_go"):
            st.session_state["ds_means"] = (name, stamp, by, only)
        drawn = query.classes or (tuple(ms.classes[:CLASS_ROWS]) if len(ms.classes) > CLASS_ROWS else None)
        if drawn and not query.classes:
            st.caption(f"The first {CLASS_ROWS} of {len(ms.classes)} classes are drawn; the True class filter "
                       "picks others.")
        if st.session_state.get("ds_means") == (name, stamp, by, only):
            try:
                st.image(get_class_means(name, stamp, by, rows, drawn), width="stretch")
            except ValueError as e:
                st.error(md_escape(str(e), 300))


def _guarded(what: str, fn, *args) -> bool:
    """Run ``fn(*args)``; a failure becomes an error naming ``what`` on the page (never a traceback; the server log
    keeps unexpected ones). Returns whether it ran."""
    try:
        fn(*args)
        return True
    except STORE_ERRORS as e:
        st.error(f"Could not {what}: {md_escape(str(e), 600)}")
    except Exception as e:  # noqa: BLE001 - never a traceback on the page
        traceback.print_exc()
        st.error(f"Could not {what} (internal error: {type(e).__name__})")
    return False


def main() -> None:
    """The Dataset view, top to bottom."""
    st.title("A data set's maps, from a store")
    names = list_stores()
    if not names:
        st.info("The store folder (GATTA_VIZ_STORE_DIR) holds no map store yet: make one with "
                "`gatta-viz maps --model NAME --dataset D --out FOLDER/NAME.zarr`.")
        st.stop()
    name = st.sidebar.selectbox("Store", names, key="ds_store", help="Map stores of the operator's folder "
                                "(GATTA_VIZ_STORE_DIR), made by `gatta-viz maps`.")
    _reset_filters(name)
    opened = {}

    def read() -> None:
        opened["ms"], opened["stamp"] = open_store(name), store_stamp(name)
        opened["table"] = get_table(name, opened["stamp"])

    if not _guarded("open the store", read):
        st.stop()
    ms, stamp, table = opened["ms"], opened["stamp"], opened["table"]
    describe(ms, name)
    query = sidebar_query(ms, table)
    shown = query_table(table, ms.classes, query)
    st.markdown(f"**{len(shown):,} of {len(table):,} images** match" + (f"; the first {LISTED} are listed."
                                                                          if len(shown) > LISTED else "."))
    st.dataframe(with_class_names(shown.head(LISTED), ms.classes).round(4))
    if len(shown):
        options = [int(r) for r in shown.index[:LISTED]]
        if st.session_state.get("ds_row") not in options:
            st.session_state["ds_row"] = options[0]
        row = st.selectbox("Image", options, key="ds_row", format_func=_image_label(table, ms.classes))
        _guarded(f"show row {row} of the store", show_image, ms, name, stamp, row)
    else:
        st.info("No image matches these filters.")
    _guarded("compute this view of the store", show_views, ms, name, stamp, shown, query)
