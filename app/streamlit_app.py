"""gatta_viz Streamlit app: upload images and inspect GAttA attention across layers.

Start with ``gatta-viz app`` or ``streamlit run app/streamlit_app.py``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

import gatta_viz as gv  # noqa: E402
import logic  # noqa: E402

st.set_page_config(page_title="gatta_viz: GAttA attention explorer", layout="wide")


@st.cache_resource(show_spinner="Loading model...")
def get_model(name_or_path: str) -> gv.LoadedModel:
    return logic.load_model(name_or_path)


@st.cache_data(show_spinner=False, max_entries=512)
def get_render(model_key: str, name: str, data: bytes, layers: tuple, cmap: str, opacity: float, signed: bool,
               joint: bool, gradcam: bool, gain: bool) -> logic.Render:
    lm = get_model(model_key)
    return logic.render(lm, name, logic.decode(name, data), list(layers), cmap, opacity, signed, joint, gradcam,
                        gain=gain)


def predictions_md(title: str, top) -> str:
    lines = [f"**{title}**"] + [f"{i + 1}. {p['label']}: {100 * p['prob']:.1f}%" for i, p in enumerate(top)]
    return "\n".join(lines)


# ------------------------------------------------------------------ sidebar: model and display options
st.sidebar.title("gatta_viz")
PATH_OPTION = "checkpoint file..."
choice = st.sidebar.selectbox("Model", list(gv.BUNDLED) + [PATH_OPTION], index=list(gv.BUNDLED).index(gv.DEFAULT_MODEL), key="model")
model_key = choice
if choice == PATH_OPTION:
    model_key = st.sidebar.text_input("Checkpoint path", key="ckpt_path")
try:
    lm = get_model(model_key)
except (ValueError, FileNotFoundError) as e:
    st.error(f"Could not load the model: {e}")
    st.stop()

st.sidebar.caption(f"{'GAttA layers: ' + ', '.join(lm.model.layer_names) if lm.is_gatta else 'plain CNN (no GAttA)'}")
all_layers = logic.conv_layers(lm)
layers = st.sidebar.multiselect("Layers", all_layers, default=all_layers, key="layers")
cmap = st.sidebar.selectbox("Colormap", logic.CMAPS, key="cmap")
opacity = st.sidebar.slider("Opacity", 0.0, 1.0, 0.55, 0.05, key="opacity")
signed = st.sidebar.radio("Sign", ["signed (red agree, blue disagree)", "rectified (agreement only)"], key="sign").startswith("signed")
joint = st.sidebar.radio("Normalisation", ["per layer", "joint across layers"], key="norm") == "joint across layers"
gain = st.sidebar.radio(
    "Map", ["agreement (as in the paper)", "alpha x agreement (what each layer boosts)"], key="map",
    help="The sign of a raw agreement map is a convention of training: negating a layer's keys and its alpha "
         "gives the same network. alpha x agreement is positive where the layer's output is amplified.",
).startswith("alpha")
show_gradcam = st.sidebar.checkbox("Grad-CAM at the same layers (captum)", value=True, key="gradcam")

# ------------------------------------------------------------------ header and inputs
st.title("GAttA attention across layers")
st.info(logic.domain_text(lm))
if not lm.is_gatta:
    st.warning(f"{lm.name} is a plain CNN without GAttA: there are no agreement maps or alphas to show; "
               "predictions and Grad-CAM only.")

uploads = st.file_uploader("Upload images (PNG, JPEG, WebP, BMP, TIFF, GIF)", accept_multiple_files=True, key="uploads")
samples = logic.list_samples()
picked = st.multiselect("...or pick sample images", samples, key="samples") if samples else []
if not samples:
    st.caption(f"No sample images found in {logic.samples_dir()}.")

files = []
errors = []
limit = logic.MAX_UPLOAD_MB * 1024 * 1024
for up in uploads or []:
    if up.size > limit:
        errors.append(f"{up.name}: file is {up.size / 1e6:.1f} MB, over the {logic.MAX_UPLOAD_MB} MB limit")
        continue
    files.append((up.name, up.getvalue()))
for rel in picked:
    with open(os.path.join(logic.samples_dir(), rel), "rb") as f:
        files.append((rel, f.read()))
for path in logic.preloaded_files():
    try:
        with open(path, "rb") as f:
            files.append((os.path.basename(path), f.read(limit + 1)))
    except OSError as e:
        errors.append(f"{os.path.basename(path)}: cannot read file ({e.strerror})")

for msg in errors:
    st.error(f"Skipped {msg}")
if not files:
    st.caption("Upload or pick an image to see its agreement maps.")
    st.stop()

# ------------------------------------------------------------------ one section per image
for name, data in files:
    try:
        r = get_render(model_key, name, data, tuple(layers), cmap, opacity, signed, joint, show_gradcam, gain)
    except gv.ImageError as e:
        st.error(f"Skipped {e}")
        continue
    except (ValueError, RuntimeError) as e:  # e.g. a checkpoint whose model cannot take this input
        st.error(f"{name}: could not explain this image ({e})")
        continue
    st.divider()
    st.subheader(name)
    c0, c1, c2 = st.columns([1, 1, 1])
    c0.image(logic.enlarge(r.shown), caption="what the model saw" + (" (colours inverted)" if r.inverted else ""))
    if r.is_gatta:
        c1.markdown(predictions_md("Pass 1 (no attention)", r.top_pass1))
        c2.markdown(predictions_md("Pass 2 (model output)", r.top_pass2))
        if r.top_pass1[0]["index"] != r.top_pass2[0]["index"]:
            c2.caption("global attention changed the prediction")
    else:
        c1.markdown(predictions_md("Prediction", r.top_pass2))

    if r.overlays:
        st.markdown("**Agreement maps** (gatta = key . q_avg; red: agrees with the global query, blue: disagrees)")
        cols = st.columns(len(r.overlays))
        for col, (layer, img) in zip(cols, r.overlays.items()):
            col.image(img, caption=f"{'alpha x agreement' if gain else 'agreement'} {layer}, alpha={r.alphas[layer]:+.3f}", width="stretch")
    if r.gradcam_overlays:
        st.markdown("**Grad-CAM** (captum LayerGradCam at the same layers, predicted class)")
        cols = st.columns(len(r.gradcam_overlays))
        for col, (layer, img) in zip(cols, r.gradcam_overlays.items()):
            col.image(img, caption=f"Grad-CAM {layer}", width="stretch")
    if r.is_gatta:
        left, right = st.columns([1, 2])
        left.markdown("**alpha per layer**")
        left.dataframe(pd.DataFrame({"layer": list(r.alphas), "alpha": list(r.alphas.values())}), hide_index=True)
        for layer, g in r.dense.items():
            right.plotly_chart(logic.dense_figure(layer, g, lm.classes, r.top_pass2[0]["index"], "gain" if gain else "agreement"),
                               key=f"bars-{name}-{layer}")
        st.markdown("**Layer contributions** (dprob_pred: change of the predicted class's probability when the "
                    "layer's modulation is switched off)")
        st.dataframe(pd.DataFrame(r.table).round(4), hide_index=True)
        d1, d2 = st.columns(2)
        stem = os.path.splitext(os.path.basename(name))[0]
        d1.download_button("Download figure (PNG)", r.figure_png, file_name=f"{stem}_fig3.png", mime="image/png", key=f"fig-{name}")
        d2.download_button("Download raw maps (.npz)", r.npz, file_name=f"{stem}_maps.npz", mime="application/octet-stream", key=f"npz-{name}")
    else:
        stem = os.path.splitext(os.path.basename(name))[0]
        st.download_button("Download Grad-CAM maps (.npz)", r.npz, file_name=f"{stem}_maps.npz", key=f"npz-{name}")
