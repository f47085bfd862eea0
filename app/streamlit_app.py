"""gatta_viz Streamlit app: upload images (or compose a two-garment scene) and inspect GAttA attention across
layers, without and under a top-down cue.

Start it with ``gatta-viz app`` (listens on 127.0.0.1 only), or directly with::

    streamlit run app/streamlit_app.py --server.address 127.0.0.1

Without ``--server.address`` Streamlit listens on every network interface. To share the app on a network,
pass the address on purpose (``gatta-viz app --address 0.0.0.0``) and put it behind something that
authenticates users.

Settings (environment variables): ``GATTA_VIZ_MAX_UPLOAD_MB``, ``GATTA_VIZ_MAX_PIXELS``,
``GATTA_VIZ_MAX_DECODED_MB`` (image limits, shared with the CLI), ``GATTA_VIZ_MODEL_DIR`` (a folder of
``.pt`` checkpoints offered by name), ``GATTA_VIZ_MAX_CHECKPOINT_MB`` (checkpoint uploads),
``GATTA_VIZ_RENDER_WORKERS`` (renders at once; default: the CPU cores), ``GATTA_VIZ_SAMPLES``.
"""
from __future__ import annotations

import hashlib
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
import torch  # noqa: E402

import gatta_viz as gv  # noqa: E402
import logic  # noqa: E402

st.set_page_config(page_title="gatta_viz: GAttA attention explorer", layout="wide")
try:  # the operator's settings, checked before anything else
    image_limits = logic.limits()
    logic.checkpoint_limit_bytes()
    torch.set_num_threads(logic.torch_threads_per_render())  # renders run in parallel, one per core
except ValueError as e:
    st.error(f"The app is misconfigured: {e}")
    st.stop()


@st.cache_resource(show_spinner="Loading model...", max_entries=logic.MODEL_CACHE_ENTRIES)
def get_pool(kind: str, key: str, _data: bytes = b"", _name: str = "") -> logic.ModelPool:
    """A model and its render replicas. kind: "named" (bundled or model folder, key = name) or "upload"
    (key = content hash; the bytes are not hashed again)."""
    lm = logic.load_uploaded(_name, _data) if kind == "upload" else logic.load_model(key)
    pool = logic.ModelPool(lm)
    pool.warm_up()
    return pool


@st.cache_data(show_spinner=False, max_entries=logic.RENDER_CACHE_ENTRIES, max_size=logic.RENDER_CACHE_BYTES)
def get_render(model_id: str, digest: str, name: str, layers: tuple, cmap: str, opacity: float, signed: bool,
               joint: bool, gradcam: bool, gain: bool, target, cue, outlines: tuple, _pool: logic.ModelPool,
               _data: bytes):
    """One image's render, or the error message that replaces it (both cached: a bad file is decoded once).
    Keyed by the model, the content hash and the options (cue and outlines included); the bytes themselves are
    not hashed again."""
    try:
        return logic.render_upload(_pool, name, _data, layers=list(layers), cmap=cmap, opacity=opacity, signed=signed,
                                   joint=joint, gradcam=gradcam, gain=gain, target=target, cue=cue,
                                   outlines=list(outlines) or None)
    except gv.ImageError as e:
        return f"Skipped {e}"
    except (ValueError, RuntimeError) as e:  # e.g. a checkpoint whose model cannot take this input
        return f"{name}: could not explain this image ({e})"


def predictions_md(title: str, top) -> str:
    lines = [f"**{title}**"] + [f"{i + 1}. {logic.md_escape(p['label'])}: {100 * p['prob']:.1f}%" for i, p in enumerate(top)]
    return "\n".join(lines)


# ------------------------------------------------------------------ sidebar: model
st.sidebar.title("gatta_viz")
UPLOAD_OPTION = "upload a checkpoint (.pt)..."
folder_models = logic.list_model_files()
options = list(gv.BUNDLED) + folder_models + [UPLOAD_OPTION]
choice = st.sidebar.selectbox("Model", options, index=options.index(gv.DEFAULT_MODEL), key="model",
                              help="Bundled models, the operator's model folder (GATTA_VIZ_MODEL_DIR) or a checkpoint "
                                   "made by `gatta-viz train` / `gatta-viz export`.")
try:
    if choice == UPLOAD_OPTION:
        ckpt = st.sidebar.file_uploader("Checkpoint file", type=["pt", "pth"], key="ckpt_upload",
                                        max_upload_size=max(1, logic.checkpoint_limit_bytes() // 2**20))
        if ckpt is None:
            st.info("Upload a checkpoint file made by `gatta-viz train` or `gatta-viz export` (read with "
                    "`torch.load(weights_only=True)`: no code in it runs).")
            st.stop()
        ckpt_data = ckpt.getvalue()
        model_id = "upload:" + hashlib.sha256(ckpt_data).hexdigest()
        pool = get_pool("upload", model_id, ckpt_data, ckpt.name)
    else:
        model_id = "named:" + choice
        pool = get_pool("named", choice)
except (ValueError, FileNotFoundError) as e:
    st.error(f"Could not load the model: {logic.md_escape(str(e), 600)}")
    st.stop()
lm = pool.lm

st.sidebar.caption(f"{'GAttA layers: ' + ', '.join(lm.model.layer_names) if lm.is_gatta else 'plain CNN (no GAttA)'}")

# ------------------------------------------------------------------ sidebar: display options
all_layers = logic.conv_layers(lm)
canvas = logic.composer_canvas(lm)  # (H, W) for models whose input holds two garments at different places
garments = logic.garment_files() if canvas else []
if st.session_state.get("options_for_model") != model_id:  # another model: its own layers, classes and canvas
    st.session_state["layers"] = all_layers
    st.session_state["gradcam_target"] = logic.PREDICTED
    st.session_state["cue"] = logic.NO_CUE
    if canvas and len(garments) >= 2:
        for i, (g, x, y) in enumerate(logic.default_composition(canvas, garments)):
            st.session_state[f"garment{i}"], st.session_state[f"gx{i}"], st.session_state[f"gy{i}"] = g, x, y
    st.session_state["options_for_model"] = model_id
layers = st.sidebar.multiselect("Layers", all_layers, key="layers")
gain = st.sidebar.radio(
    "Map", logic.MAP_OPTIONS, key="map",
    help="alpha x agreement = gain - 1 is what pass 2 does to each position: > 0 boosted, < 0 suppressed. "
         "The sign of raw agreement is a convention of training (negating a layer's keys and its alpha gives the "
         "same network): read it together with the layer's alpha.",
) == logic.MAP_GAIN
signed = st.sidebar.radio("Sign", [logic.SIGN_SIGNED, logic.SIGN_RECTIFIED], key="sign") == logic.SIGN_SIGNED
joint = st.sidebar.radio("Normalisation", [logic.NORM_LAYER, logic.NORM_JOINT], key="norm") == logic.NORM_JOINT
cmap = st.sidebar.selectbox("Colormap", logic.cmaps_for(signed), key="cmap",
                            help="Diverging colormaps for signed maps (0 in the middle); sequential ones only "
                                 "for rectified maps.")
opacity = st.sidebar.slider("Opacity", 0.0, 1.0, 0.55, 0.05, key="opacity")
show_gradcam = st.sidebar.checkbox("Grad-CAM at the same layers (captum)", value=True, key="gradcam")
target_label = st.sidebar.selectbox("Grad-CAM class", [logic.PREDICTED] + list(lm.classes), key="gradcam_target",
                                    disabled=not show_gradcam,
                                    help="Grad-CAM explains one class's score; agreement maps do not depend on a class.")
target = None if target_label == logic.PREDICTED else list(lm.classes).index(target_label)
cue_options = logic.cue_options(lm)  # only for GAttA models with stored class queries
cue = logic.cue_of(st.sidebar.selectbox("Top-down cue", cue_options, key="cue", help=logic.CUE_HELP)) \
    if cue_options else None

# ------------------------------------------------------------------ header and inputs
st.title("GAttA attention across layers")
st.info(logic.domain_text(lm))
if not lm.is_gatta:
    st.warning(f"{logic.md_escape(lm.name)} is a plain CNN without GAttA: there are no agreement maps or alphas to "
               "show; predictions and Grad-CAM only.")
else:
    st.markdown(logic.CLASS_AGNOSTIC_NOTE)

files = []  # (name, bytes, outlines)
errors = []
if canvas and len(garments) >= 2:
    h_c, w_c = canvas
    with st.expander(f"Compose a two-garment scene on the {w_c}x{h_c} canvas", expanded=True):
        compose = st.checkbox("Explain this composed scene (two sample garments on black, composited by pixel-wise "
                              "max as the fmnist-pairs scenes are)", value=True, key="compose")
        picks = []
        for i, col in enumerate(st.columns(2)):
            g = col.selectbox(f"Garment {i + 1}", garments, key=f"garment{i}")
            x = col.slider(f"Garment {i + 1}: x (left edge)", 0, w_c - logic.GARMENT_SIDE, key=f"gx{i}")
            y = col.slider(f"Garment {i + 1}: y (top edge)", 0, h_c - logic.GARMENT_SIDE, key=f"gy{i}")
            picks.append((g, x, y))
        if compose:
            try:
                scene = logic.compose_from_samples([g for g, _, _ in picks], [(x, y) for _, x, y in picks], canvas,
                                                   lm.classes)
                outlines = tuple((tuple(o.box), o.label, o.colour) for o in scene.outlines())
                files.append((scene.name, scene.png(), outlines))
            except (ValueError, gv.ImageError) as e:
                errors.append(f"Could not compose the scene: {e}")

uploads = st.file_uploader(f"Upload images (PNG, JPEG, WebP, BMP, TIFF, GIF; {image_limits.describe()})",
                           accept_multiple_files=True, key="uploads", max_upload_size=logic.upload_limit_mb())
samples = logic.list_samples()
picked = st.multiselect("...or pick sample images", samples, key="samples") if samples else []
if not samples:
    st.caption("No sample images found.")

for up in uploads or []:
    if up.size > image_limits.max_bytes:
        errors.append(f"Skipped {up.name}: file is {up.size / 2**20:.3g} MB, over the {image_limits.max_mb:.3g} MB limit")
        continue
    files.append((up.name, up.getvalue(), ()))
for rel in picked:
    if rel not in samples:  # only the listed files, never a path typed into the widget's state
        continue
    try:
        with open(os.path.join(logic.samples_dir(), rel), "rb") as f:
            files.append((rel, f.read(image_limits.max_bytes + 1), ()))
    except OSError as e:
        errors.append(f"Skipped {rel}: cannot read the file: {(e.strerror or str(e)).lower()}")
for path in logic.preloaded_files():  # set by the operator's command line, not by a visitor
    try:
        with open(path, "rb") as f:
            files.append((os.path.basename(path), f.read(image_limits.max_bytes + 1), ()))
    except OSError as e:
        errors.append(f"Skipped {os.path.basename(path)}: cannot read the file: {(e.strerror or str(e)).lower()}")
if len(files) > logic.MAX_IMAGES:
    errors.append(f"{len(files) - logic.MAX_IMAGES} more image(s) not shown: at most {logic.MAX_IMAGES} per page")
    files = files[: logic.MAX_IMAGES]

for msg in errors:
    st.error(logic.md_escape(msg, 600))
if not files:
    st.caption("Upload or pick an image to see its maps.")
    st.stop()

# ------------------------------------------------------------------ one section per image
for position, (name, data, outlines) in enumerate(files):
    wkey = logic.content_key(position, data)
    try:
        r = get_render(model_id, wkey.split("-", 1)[1], name, tuple(layers), cmap, opacity, signed, joint,
                       show_gradcam, gain, target, cue, outlines, pool, data)
    except TimeoutError as e:
        st.error(f"{logic.md_escape(name)}: {e}")
        continue
    except Exception as e:  # noqa: BLE001 - never a traceback on the page; the server log keeps it
        traceback.print_exc()
        st.error(f"{logic.md_escape(name)}: could not explain this image (internal error: {type(e).__name__})")
        continue
    if isinstance(r, str):
        st.error(logic.md_escape(r, 600))
        continue
    st.divider()
    st.subheader(logic.md_escape(name))
    c0, c1, c2, *c3 = st.columns([1, 1, 1, 1] if r.cue else [1, 1, 1])
    saw = "what the model saw" + (" (colours inverted)" if r.inverted else "")
    if r.shown_outlined is not None:
        c0.image(r.shown_outlined, caption=f"{saw}; {r.outline_caption()}")
    else:
        c0.image(logic.enlarge(r.shown), caption=saw)
    if r.is_gatta:
        c1.markdown(predictions_md("Pass 1 (no attention)", r.top_pass1))
        c2.markdown(predictions_md("Pass 2 (model output)", r.top_pass2))
        if r.top_pass1[0]["index"] != r.top_pass2[0]["index"]:
            c2.caption("global attention changed the prediction")
        if r.cue:
            c3[0].markdown(predictions_md(f"Pass 2 cued: {logic.md_escape(r.cue)}", r.cued_top_pass2))
            if r.cued_top_pass2[0]["index"] != r.top_pass2[0]["index"]:
                c3[0].caption("the cue changed the prediction")
    else:
        c1.markdown(predictions_md("Prediction", r.top_pass2))

    if r.overlays:
        legend, bar = st.columns([3, 1])
        legend.markdown(logic.maps_legend(r.gain, r.signed, r.joint, cmap)
                        + (" " + logic.CUE_ROWS_NOTE if r.cue else ""))
        bar.image(logic.colorbar(cmap, r.signed), caption=logic.colorbar_caption(r.gain, r.signed), width="stretch")
        if r.cue:
            st.markdown("**Without cue** (the query pass 1 pooled from the image)")
        cols = st.columns(len(r.overlays))
        for col, (layer, img) in zip(cols, r.overlays.items()):
            col.image(img, caption=f"{logic.map_label(r.gain)} {layer}, alpha={r.alphas[layer]:+.3f}", width="stretch")
        if r.cue:
            st.markdown(f"**Cued: {logic.md_escape(r.cue)}** (the class's stored query replaces the pooled one)")
            cols = st.columns(len(r.cued_overlays))
            for col, (layer, img) in zip(cols, r.cued_overlays.items()):
                col.image(img, caption=f"cued: {r.cue} · {logic.map_label(r.gain)} {layer}, alpha={r.alphas[layer]:+.3f}",
                          width="stretch")
    if r.gradcam_overlays:
        st.markdown(logic.gradcam_legend(r.gradcam_target, r.signed, r.joint, cmap))
        cols = st.columns(len(r.gradcam_overlays))
        for col, (layer, img) in zip(cols, r.gradcam_overlays.items()):
            col.image(img, caption=f"Grad-CAM {layer}", width="stretch")
    stem = logic.file_stem(name)
    if r.is_gatta:
        left, right = st.columns([1, 2])
        left.markdown("**alpha per layer** (modulation strength; its sign says which way agreement acts)")
        left.dataframe(pd.DataFrame({"layer": list(r.alphas), "alpha": list(r.alphas.values())}), hide_index=True)
        for layer, g in r.dense.items():
            right.plotly_chart(logic.dense_figure(layer, g, lm.classes, r.top_pass2[0]["index"],
                                                  "gain" if r.gain else "agreement"), key=f"bars-{wkey}-{layer}")
        for layer, g in r.cued_dense.items():
            fig = logic.dense_figure(layer, g, lm.classes, r.cued_top_pass2[0]["index"], "gain" if r.gain else "agreement")
            fig.update_layout(title=f"cued: {r.cue} · " + fig.layout.title.text)
            right.plotly_chart(fig, key=f"cued-bars-{wkey}-{layer}")
        st.markdown("**Layer contributions**" + (" (without cue)" if r.cue else ""))
        st.dataframe(pd.DataFrame(r.table).round(4), hide_index=True)
        if r.cue:
            st.markdown(f"**Layer contributions, cued: {logic.md_escape(r.cue)}** (dprob_pred for the prediction "
                        "under the cue, with the cue kept when a layer's modulation is switched off)")
            st.dataframe(pd.DataFrame(r.cued_table).round(4), hide_index=True)
        st.caption(logic.TABLE_CAPTION)
        d1, d2 = st.columns(2)
        d1.download_button("Download figure (PNG)", r.figure_png, file_name=f"{stem}_fig3.png", mime="image/png",
                           key=f"fig-{wkey}")  # drawn when clicked
        d2.download_button("Download raw maps (.npz)", r.npz, file_name=f"{stem}_maps.npz",
                           mime="application/octet-stream", key=f"npz-{wkey}")
    else:
        st.download_button("Download Grad-CAM maps (.npz)", r.npz, file_name=f"{stem}_maps.npz", key=f"npz-{wkey}")
