"""The words and choices on the page: option labels, legends that follow every display control, captions, and
one sentence on the model's domain. Pure functions of their arguments (no Streamlit), so tests read them directly.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..models.checkpoint import LoadedModel
from .uploads import md_escape

__all__ = [
    "MAP_GAIN", "MAP_RAW", "MAP_OPTIONS", "SIGN_SIGNED", "SIGN_RECTIFIED", "NORM_LAYER", "NORM_JOINT", "PREDICTED",
    "DIVERGING", "SEQUENTIAL", "CMAPS", "NO_CUE", "CUE_HELP", "CUE_ROWS_NOTE", "CLASS_AGNOSTIC_NOTE", "TABLE_CAPTION",
    "cmaps_for", "cue_options", "cue_of", "map_label", "maps_legend", "gradcam_legend", "colorbar_caption",
    "predictions_md", "domain_text",
]

MAP_GAIN = "alpha x agreement (what pass 2 boosts or suppresses)"
MAP_RAW = "raw agreement (sign set by training)"
MAP_OPTIONS = [MAP_GAIN, MAP_RAW]
SIGN_SIGNED = "signed (both directions)"
SIGN_RECTIFIED = "rectified (positive values only)"
NORM_LAYER = "per layer"
NORM_JOINT = "joint across layers"
PREDICTED = "predicted class (pass 2)"
DIVERGING = ["RdBu_r", "coolwarm", "seismic", "PiYG"]  # red (or green) = positive: boosted
SEQUENTIAL = ["viridis", "magma"]  # for rectified maps only: no negative side to show
CMAPS = DIVERGING + SEQUENTIAL
_ENDS = {"RdBu_r": ("blue", "red"), "coolwarm": ("blue", "red"), "seismic": ("blue", "red"),
         "PiYG": ("pink", "green"), "viridis": ("purple", "yellow"), "magma": ("black", "pale yellow")}
NO_CUE = "None (the query pooled from the image)"
CUE_HELP = ("A top-down cue replaces the global query that pass 1 pools from the image by the model's stored query "
            "of one class (the mean pooled query of training images holding that class alone): \"what would the "
            "network attend to if it were looking for this class?\" The maps without and under the cue are shown "
            "side by side, each layer's two maps on one colour scale.")
CUE_ROWS_NOTE = ("Two rows: without the cue and under it; **each layer's two maps share one colour scale** (the larger "
                 "of their largest values), so a colour means the same value in both rows.")
CLASS_AGNOSTIC_NOTE = (
    "Agreement maps are **class-agnostic**: the global query q_avg pools the whole image, so a map shows where the "
    "network's attention agreed, not evidence for one class. **Grad-CAM is class-specific**: it follows the gradient "
    "of one class's score (the predicted class unless you choose another in the sidebar).")
TABLE_CAPTION = (
    "One row per GAttA layer. **alpha**: the layer's learned modulation strength. **mean**, **std**: of its raw "
    "agreement key . q_avg over positions (units for a dense layer). **frac_up** / **frac_down**: share of positions "
    "whose gain 1 + alpha x agreement is above / below 1, i.e. boosted / suppressed by pass 2. **mean_gain**: mean of "
    "1 + alpha x agreement over positions (1 = no net change). **dprob_pred** = p(full model) - p(this layer's "
    "modulation off), for the predicted class: positive means the layer's modulation raised the predicted class's "
    "probability, negative that it lowered it.")


def cmaps_for(signed: bool) -> List[str]:
    """Colormaps offered: diverging ones for signed maps (0 in the middle), sequential ones too when rectified."""
    return list(DIVERGING) if signed else list(CMAPS)


def cue_options(lm: LoadedModel) -> List[str]:
    """What the cue selector offers: :data:`NO_CUE` and the class names, for a GAttA model with stored class
    queries; [] otherwise (the page then shows no cue selector)."""
    if not lm.is_gatta or getattr(lm, "class_queries", None) is None:
        return []
    return [NO_CUE] + list(lm.classes)


def cue_of(choice: Optional[str]) -> Optional[str]:
    """The cue a selector value stands for (None for :data:`NO_CUE`)."""
    return None if choice in (None, "", NO_CUE) else str(choice)


def map_label(gain: bool) -> str:
    """The name of the map kind in captions."""
    return "alpha x agreement" if gain else "raw agreement"


def maps_legend(gain: bool, signed: bool, joint: bool, cmap: str = "RdBu_r") -> str:
    """The legend above a set of maps, in words that follow every display control."""
    low, high = _ENDS.get(cmap, ("the low end", "the high end"))
    if gain:
        what = "**alpha x agreement** (gain - 1): what pass 2 does to each position"
        sign = (f"{high}: boosted (gain > 1), {low}: suppressed (gain < 1), middle: unchanged" if signed
                else f"boosted positions only, up to {high} (suppressed ones are shown as 0)")
    else:
        what = ("**raw agreement** key . q_avg (sign set by training: read it with the layer's alpha, shown under each "
                "map; with alpha < 0 the layer boosts where agreement is negative)")
        sign = (f"{high}: agrees with the global query, {low}: disagrees" if signed
                else f"positive agreement only, up to {high}")
    scale = ("one colour scale for all layers: colours compare across layers" if joint
             else "each layer scaled to its own largest value: compare patterns, not strengths, across layers")
    return f"{what}. {sign}; {scale}."


def gradcam_legend(target: Dict[str, Any], signed: bool, joint: bool, cmap: str = "RdBu_r") -> str:
    """The legend above the Grad-CAM maps: class, sign, scale."""
    low, high = _ENDS.get(cmap, ("the low end", "the high end"))
    who = f"class **{md_escape(target['label'])}**" + (" (the predicted class)" if target.get("predicted") else "")
    sign = (f"{high}: raises that class's score, {low}: lowers it" if signed else f"positive evidence only, up to {high}")
    scale = "one scale for all layers" if joint else "each layer scaled to its own largest value"
    return f"**Grad-CAM** (captum LayerGradCam at the same layers) for {who}: class-specific. {sign}; {scale}."


def colorbar_caption(gain: bool, signed: bool) -> str:
    """Words under the colour strip."""
    if gain:
        return "suppressed <- 0 (unchanged) -> boosted" if signed else "0 -> most boosted"
    return "disagrees <- 0 -> agrees" if signed else "0 -> most agreement"


def predictions_md(title: str, top: List[Dict[str, Any]]) -> str:
    """A numbered list of the top classes and their probabilities under a bold title."""
    return "\n".join([f"**{title}**"] + [f"{i + 1}. {md_escape(p['label'])}: {100 * p['prob']:.1f}%"
                                        for i, p in enumerate(top)])


_KINDS = {"fmnist-pairs": " (two garments per image, composited by pixel-wise max)",
          "fmnist-pairs-multimnist": " (two garments per image, composited by pixel-wise max)",
          "fmnist-clutter": " (one garment over a crop of a natural photo, with clutter)"}


def domain_text(lm: LoadedModel) -> str:
    """One sentence telling what inputs the model was trained on and what an upload becomes."""
    pre = lm.preprocess
    h, w = pre["size"]
    colour = "greyscale" if pre["channels"] == 1 else "RGB"
    data = lm.meta.get("dataset", "its training data")
    text = (f"**{md_escape(lm.name)}** was trained on **{md_escape(data)}**{_KINDS.get(str(data), '')}: {w}x{h} "
            f"{colour} images of {len(lm.classes)} classes ({md_escape(', '.join(lm.classes), 400)}). Every upload is "
            f"{'greyscaled, ' if pre['channels'] == 1 else ''}padded to the model's aspect ratio and resized to "
            f"{w}x{h} (an image of exactly {w}x{h} goes in as it is)")
    if pre.get("background") == "dark":
        text += "; the training images are light garments on a black background, so pictures with a bright border are inverted"
    return text + ". Photos of other things are out of domain: the model will still pick one of its classes."
