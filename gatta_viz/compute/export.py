"""An explanation's numbers as files: the JSON summary (strict: NaN as null) and the .npz of every array."""
from __future__ import annotations

import io
from typing import Any, Dict

import numpy as np

from .checks import untrained_message
from .record import Explanation
from ..data.files import strict_json

__all__ = ["summary_of", "npz_bytes"]

_CUED_QUERY = ("the cue's query replaced the query pass 1 pooled from the image: maps, pass 2, layers and Grad-CAM "
               "are under the cue")


def summary_of(ex: Explanation) -> Dict[str, Any]:
    """JSON-able summary of an explanation (plain types; non-finite numbers as None).

    Keys: ``prediction``, ``top_pass1``, ``top_pass2``, ``prediction_changed_by_pass2``, ``alphas``, ``layers``
    (the table), ``normalisation``, ``maps``, ``map_scales``, ``input_inverted``; ``warning`` for an untrained
    model; ``true_label`` when known; under a cue ``cue``, ``query`` and, with the uncued result,
    ``prediction_changed_by_cue`` and ``uncued`` (its prediction, top_pass2, layers, map_scales). A plain CNN's
    summary has ``model_kind: "plain CNN"`` and its Grad-CAM target instead of maps.

    Args:
        ex: the explanation.
    Returns:
        a dict that ``json.dumps(..., allow_nan=False)`` accepts.
    """
    s = ex.shown
    out: Dict[str, Any] = {
        "prediction": s.prediction,
        "top_pass1": s.top_pass1,
        "top_pass2": s.top_pass2,
        "prediction_changed_by_pass2": s.top_pass1[0]["index"] != s.top_pass2[0]["index"],
        "alphas": s.alphas,
        "layers": s.table,
        "normalisation": {"signed": ex.options.signed, "joint": ex.options.joint},
        "maps": ex.options.map_kind,
        "map_scales": s.scales,
        "input_inverted": ex.inverted,
    }
    if not ex.is_gatta:
        out["model_kind"] = "plain CNN (no GAttA layers): predictions and Grad-CAM only"
        out.pop("maps")
    if ex.untrained:
        out["warning"] = untrained_message(ex.options.gain)
    if ex.true_label is not None:
        out["true_label"] = {"index": int(ex.true_label), "label": ex.classes[int(ex.true_label)]}
    if ex.cue is not None:
        out["cue"] = ex.cue
        out["query"] = _CUED_QUERY
    if ex.compare:
        u = ex.uncued
        out["prediction_changed_by_cue"] = u.top_pass2[0]["index"] != s.top_pass2[0]["index"]
        out["uncued"] = {"prediction": u.prediction, "top_pass2": u.top_pass2, "layers": u.table,
                         "map_scales": u.scales}
        out["normalisation"]["shared_with_uncued"] = True
    return strict_json(out)


def npz_bytes(ex: Explanation) -> bytes:
    """The .npz of an explanation.

    Keys: ``image``, ``raw/<layer>`` (raw agreement), ``gain_map/<layer>`` (alpha x agreement, unscaled),
    ``heatmap/<layer>`` (the map shown, normalised, input size), ``gradcam/<layer>``, ``q_avg`` (the query the
    maps used: the cue's, when cued), ``logits_pass1``, ``logits_pass2``, ``alpha/<layer>``. Under a cue also
    ``q_pass1`` (the query pass 1 pooled, which the cue replaced) and, with the uncued result, the same keys
    prefixed ``uncued/`` (``uncued/raw/<layer>``, ``uncued/heatmap/<layer>``, ``uncued/logits_pass2``...).
    A plain CNN's: ``image``, ``logits``, ``gradcam/<layer>``.

    Args:
        ex: the explanation.
    Returns:
        the bytes of a compressed .npz file (``numpy.load(io.BytesIO(data))`` reads it).
    """
    s = ex.shown
    arrays = {"image": ex.image, **s.arrays()}
    if s.trace is not None and s.trace.q_pass1 is not None:
        arrays["q_pass1"] = s.trace.q_pass1[0].numpy()
    if ex.compare:
        arrays.update({f"uncued/{k}": v for k, v in ex.uncued.arrays().items() if not k.startswith("alpha/")})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
