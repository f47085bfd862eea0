"""The Streamlit page: upload images (or compose a two-garment scene) and inspect GAttA attention across layers,
without and under a top-down cue. Layout only: every computation is a call into the library or the app's
other modules. Run by ``gatta-viz app`` (``streamlit_page.py``) and by a clone's ``app/streamlit_app.py``.

Settings (environment variables): ``GATTA_VIZ_MAX_UPLOAD_MB``, ``GATTA_VIZ_MAX_PIXELS``,
``GATTA_VIZ_MAX_DECODED_MB`` (image limits, shared with the CLI), ``GATTA_VIZ_MODEL_DIR`` (a folder of
``.pt`` checkpoints offered by name), ``GATTA_VIZ_STORE_DIR`` (a folder of map stores, offered by name in the
Dataset view), ``GATTA_VIZ_MAX_CHECKPOINT_MB`` (checkpoint uploads),
``GATTA_VIZ_RENDER_WORKERS`` (renders at once; default: the CPU cores), ``GATTA_VIZ_SAMPLES``.
"""
from __future__ import annotations

import hashlib
import traceback
from dataclasses import dataclass
from typing import List, Optional, Tuple

import pandas as pd
import streamlit as st
import torch

from ..data.limits import image_limits
from ..data.preprocess import ImageError
from ..compute.explain import gradcam_layers
from ..compute.options import MapOptions
from ..models.checkpoint import BUNDLED, DEFAULT_MODEL, LoadedModel
from ..render.images import colorbar_strip
from ..render.options import FigureOptions
from ..render.plotly_bars import dense_bars
from . import composer, dataset, settings, text
from .models import list_model_files, load_model, load_uploaded
from .pool import ModelPool
from .render import Render, render_upload, warm_up
from .uploads import Input, collect_inputs, content_key, file_stem, list_samples, md_escape

__all__ = ["main"]

UPLOAD_OPTION = "upload a checkpoint (.pt)..."
IMAGES_VIEW, DATASET_VIEW = "Images", "Dataset"  # the Dataset view is offered when the operator names a store folder


@st.cache_resource(show_spinner="Loading model...", max_entries=settings.MODEL_CACHE_ENTRIES)
def get_pool(kind: str, key: str, _data: bytes = b"", _name: str = "") -> ModelPool:
    """A model and its render replicas. kind: "named" (bundled or model folder, key = name) or "upload"
    (key = content hash; the bytes are not hashed again)."""
    lm = load_uploaded(_name, _data) if kind == "upload" else load_model(key)
    pool = ModelPool(lm)
    warm_up(pool)
    return pool


@st.cache_data(show_spinner=False, max_entries=settings.RENDER_CACHE_ENTRIES, max_size=settings.RENDER_CACHE_BYTES)
def get_render(model_id: str, digest: str, name: str, options_key: str, outlines: tuple, _pool: ModelPool,
               _data: bytes, _options: MapOptions, _figure: FigureOptions):
    """One input's render, or the error message that replaces it (both cached: a bad file is decoded once).
    Keyed by the model, the content hash and the options (cue and outlines included); the bytes themselves are
    not hashed again. Any failure is named with the file, so one bad input never stops the others."""
    try:
        return render_upload(_pool, name, _data, _options, _figure, list(outlines) or None)
    except ImageError as e:
        return f"Skipped {e}"
    except (ValueError, RuntimeError) as e:  # e.g. a checkpoint whose model cannot take this input
        return f"{name}: could not explain this image ({e})"


@dataclass(frozen=True)
class View:
    """The sidebar's choices: what to compute (``options``) and how to draw it (``figure``)."""

    options: MapOptions
    figure: FigureOptions

    @property
    def key(self) -> str:
        """A cache key of every choice (options are frozen dataclasses of plain values)."""
        return repr((self.options, self.figure))


def sidebar_model() -> Tuple[str, ModelPool]:
    """The model chooser: bundled, the operator's folder, or an uploaded checkpoint. Returns (model id, pool)."""
    options = list(BUNDLED) + list_model_files() + [UPLOAD_OPTION]
    choice = st.sidebar.selectbox("Model", options, index=options.index(DEFAULT_MODEL), key="model",
                                  help="Bundled models, the operator's model folder (GATTA_VIZ_MODEL_DIR) or a "
                                       "checkpoint made by `gatta-viz train` / `gatta-viz export`.")
    try:
        if choice != UPLOAD_OPTION:
            return "named:" + choice, get_pool("named", choice)
        ckpt = st.sidebar.file_uploader("Checkpoint file", type=["pt", "pth"], key="ckpt_upload",
                                        max_upload_size=max(1, settings.checkpoint_limit_bytes() // 2**20))
        if ckpt is None:
            st.info("Upload a checkpoint file made by `gatta-viz train` or `gatta-viz export` (read with "
                    "`torch.load(weights_only=True)`: no code in it runs).")
            st.stop()
        data = ckpt.getvalue()
        model_id = "upload:" + hashlib.sha256(data).hexdigest()
        return model_id, get_pool("upload", model_id, data, ckpt.name)
    except (ValueError, FileNotFoundError) as e:
        st.error(f"Could not load the model: {md_escape(str(e), 600)}")
        st.stop()


def reset_choices(lm: LoadedModel, model_id: str, layers: List[str], canvas, garments: List[str]) -> None:
    """Another model: its own layers, classes, cue and composer canvas."""
    if st.session_state.get("options_for_model") == model_id:
        return
    st.session_state["layers"] = layers
    st.session_state["gradcam_target"] = text.PREDICTED
    st.session_state["cue"] = text.NO_CUE
    if canvas and len(garments) >= 2:
        for i, (g, x, y) in enumerate(composer.default_composition(canvas, garments)):
            st.session_state[f"garment{i}"], st.session_state[f"gx{i}"], st.session_state[f"gy{i}"] = g, x, y
    st.session_state["options_for_model"] = model_id


def sidebar_view(lm: LoadedModel, all_layers: List[str]) -> Optional[View]:
    """The display options, as the library's option objects (None when no layer is chosen)."""
    sb = st.sidebar
    layers = sb.multiselect("Layers", all_layers, key="layers")
    gain = sb.radio("Map", text.MAP_OPTIONS, key="map",
                    help="alpha x agreement = gain - 1 is what pass 2 does to each position: > 0 boosted, < 0 "
                         "suppressed. The sign of raw agreement is a convention of training (negating a layer's keys "
                         "and its alpha gives the same network): read it together with the layer's alpha.") == text.MAP_GAIN
    signed = sb.radio("Sign", [text.SIGN_SIGNED, text.SIGN_RECTIFIED], key="sign") == text.SIGN_SIGNED
    joint = sb.radio("Normalisation", [text.NORM_LAYER, text.NORM_JOINT], key="norm") == text.NORM_JOINT
    cmap = sb.selectbox("Colormap", text.cmaps_for(signed), key="cmap",
                        help="Diverging colormaps for signed maps (0 in the middle); sequential ones only for rectified maps.")
    opacity = sb.slider("Opacity", 0.0, 1.0, 0.55, 0.05, key="opacity")
    gradcam = sb.checkbox("Grad-CAM at the same layers (captum)", value=True, key="gradcam")
    target = sb.selectbox("Grad-CAM class", [text.PREDICTED] + list(lm.classes), key="gradcam_target",
                          disabled=not gradcam,
                          help="Grad-CAM explains one class's score; agreement maps do not depend on a class.")
    cues = text.cue_options(lm)  # only for GAttA models with stored class queries
    cue = text.cue_of(sb.selectbox("Top-down cue", cues, key="cue", help=text.CUE_HELP)) if cues else None
    if not layers:
        return None
    options = MapOptions(gain=gain, signed=signed, joint=joint, layers=tuple(layers), cue=cue, gradcam=gradcam,
                            gradcam_target=None if target == text.PREDICTED else list(lm.classes).index(target))
    return View(options, FigureOptions(cmap=cmap, opacity=opacity))


def composed_scene(lm: LoadedModel, canvas, garments: List[str]) -> Tuple[List[Input], List[str]]:
    """The scene composer (models whose input has room for two garments): ([the scene] or [], errors)."""
    if not canvas or len(garments) < 2:
        return [], []
    h_c, w_c = canvas
    with st.expander(f"Compose a two-garment scene on the {w_c}x{h_c} canvas", expanded=True):
        compose = st.checkbox("Explain this composed scene (two sample garments on black, composited by pixel-wise "
                              "max as the fmnist-pairs scenes are)", value=True, key="compose")
        picks = []
        for i, col in enumerate(st.columns(2)):
            g = col.selectbox(f"Garment {i + 1}", garments, key=f"garment{i}")
            x = col.slider(f"Garment {i + 1}: x (left edge)", 0, w_c - composer.GARMENT_SIDE, key=f"gx{i}")
            y = col.slider(f"Garment {i + 1}: y (top edge)", 0, h_c - composer.GARMENT_SIDE, key=f"gy{i}")
            picks.append((g, x, y))
    if not compose:
        return [], []
    try:
        scene = composer.compose_from_samples([g for g, _, _ in picks], [(x, y) for _, x, y in picks], canvas,
                                              lm.classes)
    except (ValueError, ImageError) as e:
        return [], [f"Could not compose the scene: {e}"]
    return [Input(scene.name, scene.png(), scene.outlines())], []


def gather_inputs(lm: LoadedModel, canvas, garments: List[str]) -> List[Input]:
    """The scene, uploads, picked samples and preloaded files; every file that cannot be used is named."""
    limits = image_limits()
    first, errors = composed_scene(lm, canvas, garments)
    uploads = st.file_uploader(f"Upload images (PNG, JPEG, WebP, BMP, TIFF, GIF; {limits.describe()})",
                               accept_multiple_files=True, key="uploads", max_upload_size=settings.upload_limit_mb())
    samples = list_samples()
    picked = st.multiselect("...or pick sample images", samples, key="samples") if samples else []
    if not samples:
        st.caption("No sample images found.")
    inputs, more = collect_inputs([(u.name, u.size, u.getvalue()) for u in uploads or []], picked,
                                  settings.preloaded_files(), limits, first)
    for msg in errors + more:
        st.error(md_escape(msg, 600))
    return inputs


def show_predictions(r: Render) -> None:
    """The input as the model saw it, and the top classes of each pass (and under the cue)."""
    c0, c1, c2, *c3 = st.columns([1, 1, 1, 1] if r.cue else [1, 1, 1])
    saw = "what the model saw" + (" (colours inverted)" if r.inverted else "")
    c0.image(r.shown_image, caption=f"{saw}; {r.outline_caption()}" if r.outlines else saw)
    if not r.is_gatta:
        c1.markdown(text.predictions_md("Prediction", r.top_pass2))
        return
    c1.markdown(text.predictions_md("Pass 1 (no attention)", r.top_pass1))
    c2.markdown(text.predictions_md("Pass 2 (model output)", r.top_pass2))
    if r.top_pass1[0]["index"] != r.top_pass2[0]["index"]:
        c2.caption("global attention changed the prediction")
    if r.cue:
        c3[0].markdown(text.predictions_md(f"Pass 2 cued: {md_escape(r.cue)}", r.cued_top_pass2))
        if r.cued_top_pass2[0]["index"] != r.top_pass2[0]["index"]:
            c3[0].caption("the cue changed the prediction")


def show_row(overlays: dict, caption) -> None:
    """One row of overlays, a column per layer."""
    for col, (layer, img) in zip(st.columns(len(overlays)), overlays.items()):
        col.image(img, caption=caption(layer), width="stretch")


def show_maps(r: Render) -> None:
    """The agreement maps (without and under the cue) and the Grad-CAM maps, each with its legend."""
    cmap, label = r.figure.cmap, text.map_label(r.gain)
    if r.overlays:
        legend, bar = st.columns([3, 1])
        legend.markdown(text.maps_legend(r.gain, r.signed, r.joint, cmap) + (" " + text.CUE_ROWS_NOTE if r.cue else ""))
        bar.image(colorbar_strip(cmap, r.signed), caption=text.colorbar_caption(r.gain, r.signed), width="stretch")
        if r.cue:
            st.markdown("**Without cue** (the query pass 1 pooled from the image)")
        show_row(r.overlays, lambda n: f"{label} {n}, alpha={r.alphas[n]:+.3f}")
        if r.cue:
            st.markdown(f"**Cued: {md_escape(r.cue)}** (the class's stored query replaces the pooled one)")
            show_row(r.cued_overlays, lambda n: f"cued: {r.cue} · {label} {n}, alpha={r.alphas[n]:+.3f}")
    if r.gradcam_overlays:
        st.markdown(text.gradcam_legend(r.gradcam_target, r.signed, r.joint, cmap))
        show_row(r.gradcam_overlays, lambda n: f"Grad-CAM {n}")


def show_details(r: Render, lm: LoadedModel, name: str, wkey: str) -> None:
    """Alphas, dense-layer bars, layer tables and the downloads."""
    stem = file_stem(name)
    if not r.is_gatta:
        st.download_button("Download Grad-CAM maps (.npz)", r.npz, file_name=f"{stem}_maps.npz", key=f"npz-{wkey}")
        return
    left, right = st.columns([1, 2])
    left.markdown("**alpha per layer** (modulation strength; its sign says which way agreement acts)")
    left.dataframe(pd.DataFrame({"layer": list(r.alphas), "alpha": list(r.alphas.values())}), hide_index=True)
    for prefix, dense, top in (("", r.dense, r.top_pass2), ("cued-", r.cued_dense, r.cued_top_pass2)):
        for layer, g in dense.items():
            fig = dense_bars(layer, g, lm.classes, top[0]["index"], "gain" if r.gain else "agreement")
            if prefix:
                fig.update_layout(title=f"cued: {r.cue} · " + fig.layout.title.text)
            right.plotly_chart(fig, key=f"{prefix}bars-{wkey}-{layer}")
    st.markdown("**Layer contributions**" + (" (without cue)" if r.cue else ""))
    st.dataframe(pd.DataFrame(r.table).round(4), hide_index=True)
    if r.cue:
        st.markdown(f"**Layer contributions, cued: {md_escape(r.cue)}** (dprob_pred for the prediction under the cue, "
                    "with the cue kept when a layer's modulation is switched off)")
        st.dataframe(pd.DataFrame(r.cued_table).round(4), hide_index=True)
    st.caption(text.TABLE_CAPTION)
    d1, d2 = st.columns(2)
    d1.download_button("Download figure (PNG)", r.figure_png, file_name=f"{stem}_fig3.png", mime="image/png",
                       key=f"fig-{wkey}")  # drawn when clicked
    d2.download_button("Download raw maps (.npz)", r.npz, file_name=f"{stem}_maps.npz",
                       mime="application/octet-stream", key=f"npz-{wkey}")


def show_input(position: int, item: Input, model_id: str, pool: ModelPool, view: View) -> None:
    """One section per input: its render, or an error naming it (the other inputs go on either way)."""
    wkey = content_key(position, item.data)
    try:
        r = get_render(model_id, wkey.split("-", 1)[1], item.name, view.key, item.outlines, pool, item.data,
                       view.options, view.figure)
    except TimeoutError as e:
        st.error(f"{md_escape(item.name)}: {e}")
        return
    except Exception as e:  # noqa: BLE001 - never a traceback on the page; the server log keeps it
        traceback.print_exc()
        st.error(f"{md_escape(item.name)}: could not explain this image (internal error: {type(e).__name__})")
        return
    if isinstance(r, str):
        st.error(md_escape(r, 600))
        return
    try:
        st.divider()
        st.subheader(md_escape(item.name))
        show_predictions(r)
        show_maps(r)
        show_details(r, pool.lm, item.name, wkey)
    except Exception as e:  # noqa: BLE001 - a failure while drawing one input is named; the others still show
        traceback.print_exc()
        st.error(f"{md_escape(item.name)}: could not show this image (internal error: {type(e).__name__})")


def main() -> None:
    """The page, top to bottom (Streamlit runs this on every interaction)."""
    st.set_page_config(page_title="gatta_viz: GAttA attention explorer", layout="wide")
    try:  # the operator's settings, checked before anything else
        settings.check()
        torch.set_num_threads(settings.torch_threads_per_render())  # renders run in parallel, one per core
    except ValueError as e:
        st.error(f"The app is misconfigured: {e}")
        st.stop()
    st.sidebar.title("gatta_viz")
    if settings.store_dir() and st.sidebar.radio("View", [IMAGES_VIEW, DATASET_VIEW], key="app_view", horizontal=True,
                                                 help="Images: explain images with a model. Dataset: a whole data "
                                                      "set's maps from a store (`gatta-viz maps`).") == DATASET_VIEW:
        dataset.main()
        return
    model_id, pool = sidebar_model()
    lm = pool.lm
    st.sidebar.caption("GAttA layers: " + ", ".join(lm.model.layer_names) if lm.is_gatta else "plain CNN (no GAttA)")
    all_layers = gradcam_layers(lm)
    canvas = composer.composer_canvas(lm)  # (H, W) for models whose input holds two garments at different places
    garments = composer.garment_files() if canvas else []
    reset_choices(lm, model_id, all_layers, canvas, garments)
    view = sidebar_view(lm, all_layers)
    st.title("GAttA attention across layers")
    st.info(text.domain_text(lm))
    if not lm.is_gatta:
        st.warning(f"{md_escape(lm.name)} is a plain CNN without GAttA: there are no agreement maps or alphas to "
                   "show; predictions and Grad-CAM only.")
    else:
        st.markdown(text.CLASS_AGNOSTIC_NOTE)
    inputs = gather_inputs(lm, canvas, garments)
    if not inputs:
        st.caption("Upload or pick an image to see its maps.")
        st.stop()
    if view is None:
        st.info("Choose at least one layer in the sidebar to see its maps.")
        st.stop()
    for position, item in enumerate(inputs):
        show_input(position, item, model_id, pool, view)
