"""Explaining images: one trace per batch (and per cue), maps at the input size, both passes' predictions, the
layer table, Grad-CAM; for a plain CNN, its predictions and Grad-CAM.

Used by the CLI (``gatta-viz explain``), the demo and the app, so they all show the same numbers. What to compute
travels as one :class:`~gatta_viz.compute.options.MapOptions`; keywords (``gain=False``, ``cue="Trouser"``...)
override its fields. Nothing here draws: figures and overlays are made from the returned records by
:mod:`gatta_viz.render`.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .arrays import image_for_display
from .checks import check_model_input, is_untrained, unknown_name_message, warn_if_untrained
from .contributions import ablation_scores, layer_statistics
from .cue import CUSTOM_QUERY, CuedForward, cued_ablation, resolve_cue
from .maps import normalize, normalize_shared, normalize_with_scales, upsample
from .options import MapOptions
from .placement import placement_of
from .record import Explanation, MapResult, topk
from ..core.hooks import temporarily_eval
from ..data.preprocess import PreparedImage
from ..models.checkpoint import LoadedModel
from ..models.kinds import is_gatta

__all__ = ["explain", "explain_batch", "explanation_from_trace", "gradcam_layers"]

Inputs = Union[PreparedImage, torch.Tensor, Sequence[PreparedImage]]
Labels = Union[None, int, Sequence[Optional[int]]]


def _as_batch(prepared: Inputs):
    """(x (B, C, H, W), shown images or None, inverted flags, originals, single?)."""
    if isinstance(prepared, PreparedImage):
        items, single = [prepared], True
    elif isinstance(prepared, (list, tuple)) and all(isinstance(p, PreparedImage) for p in prepared):
        if not prepared:
            raise ValueError("explain got an empty list of images")
        items, single = list(prepared), False
    else:
        x = check_model_input(prepared, "explain input")
        single = prepared.dim() == 3 or x.shape[0] == 1
        return x, None, [False] * x.shape[0], [None] * x.shape[0], single
    shapes = {tuple(p.tensor.shape[1:]) for p in items}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch must have one size; got {sorted(shapes)}")
    x = torch.cat([check_model_input(p.tensor, "explain input") for p in items])
    return x, [p.shown for p in items], [p.inverted for p in items], [p.original for p in items], single


def _options(options: Optional[MapOptions], overrides: dict) -> MapOptions:
    if options is not None and not isinstance(options, MapOptions):
        raise ValueError(f"options must be a gatta_viz.MapOptions, got {type(options).__name__}")
    return (options or MapOptions()).replace(**overrides) if overrides else (options or MapOptions())


def gradcam_layers(model: Any) -> List[str]:
    """Layers offered for maps and Grad-CAM: a GAttA model's conv GAttA layers, or a plain CNN's top-level
    stages holding a convolution (``layer1``..., ``conv``...).

    Args:
        model: a ``LoadedModel``, a GAttA model or a plain CNN (``nn.Module``).
    Returns:
        layer names, in the model's order.
    """
    net = model.model if isinstance(model, LoadedModel) else model
    if is_gatta(net):
        return [n for n, k in net.layer_kinds.items() if k == "conv"]
    names = [n for n, m in net.named_children() if any(isinstance(s, torch.nn.Conv2d) for s in m.modules())]
    return [n for n in names if n.startswith(("layer", "conv"))] or names


def _net_and_classes(model, classes: Optional[Sequence[str]]):
    net = model.model if isinstance(model, LoadedModel) else model
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"explain needs a model (a gv.load_model result, a GAttA model or a CNN), got "
                         f"{type(model).__name__}")
    names = list(classes) if classes is not None else (list(model.classes) if isinstance(model, LoadedModel) else None)
    return net, names


def _labels(true_label: Labels, b: int, n_classes: int) -> List[Optional[int]]:
    labels = list(true_label) if isinstance(true_label, (list, tuple)) else [true_label] * b
    if len(labels) != b:
        raise ValueError(f"true_label has {len(labels)} entries for {b} images")
    for label in labels:
        if label is not None and not 0 <= int(label) < n_classes:
            raise ValueError(f"true_label {label} is not a class index (0..{n_classes - 1})")
    return [None if label is None else int(label) for label in labels]


def _class_names(names: Optional[List[str]], n_classes: int) -> List[str]:
    names = names if names is not None else [str(i) for i in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for a model with {n_classes} outputs")
    return names


def _chosen_conv(trace, layers: Optional[Sequence[str]]) -> List[str]:
    conv = [n for n, lt in trace.layers.items() if lt.kind == "conv"]
    if layers is None:
        return conv
    unknown = [n for n in layers if n not in conv]
    if unknown:
        raise ValueError(unknown_name_message("conv GAttA layer", unknown[0], conv) + f" (conv layers: {conv})")
    return [n for n in conv if n in layers]


def _check_finite(trace) -> None:
    """Raise ValueError naming what is not finite (e.g. pass 2 overflowing), and which images, before any map is
    scaled (a scaled map would otherwise be blamed)."""
    if trace.finite:
        return
    b = trace.logits_pass2.shape[0]
    bad = [i for i in range(b) if not trace[i].finite] if b > 1 else [0]
    try:
        trace[bad[0]].check_finite()
    except ValueError as e:
        raise ValueError((f"image {bad[0]} of the batch" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
                          + f": {e}") if b > 1 else str(e)) from None


def _check_target(opts: MapOptions, n_classes: int) -> None:
    t = opts.gradcam_target
    if t is not None and not 0 <= t < n_classes:
        raise ValueError(f"gradcam_target {t} is not a class of this model (0..{n_classes - 1})")


def _gradcams(forward, x: torch.Tensor, conv: Sequence[str], target: torch.Tensor) -> dict:
    from .attributions import gradcam  # captum (and with it matplotlib) only when Grad-CAM is asked for

    with torch.enable_grad():
        return {n: gradcam(forward, x, n, target) for n in conv}


def _gatta_runs(net, x: torch.Tensor, query, opts: MapOptions):
    """Per query (the cue's first, then none to compare): (trace, ablation scores or None, Grad-CAMs), and the
    conv layers shown."""
    queries = [query] + ([None] if query is not None and opts.compare else [])
    with torch.no_grad():
        traces = [net.trace(x, query=q) for q in queries]
    for t in traces:
        _check_finite(t)
    conv = _chosen_conv(traces[0], opts.layers)
    _check_target(opts, traces[0].logits_pass2.shape[1])
    runs = []
    for q, trace in zip(queries, traces):
        pred = trace.logits_pass2.argmax(1)
        if not opts.ablation:
            abl = None
        elif q is None:
            abl = ablation_scores(net, x, pred, reference=trace.logits_pass2)
        else:
            abl = cued_ablation(net, x, pred, trace.logits_pass2, q)
        target = pred if opts.gradcam_target is None else torch.full_like(pred, opts.gradcam_target)
        forward = net if q is None else CuedForward(net, q)
        cams = _gradcams(forward, x, conv, target) if opts.gradcam and conv else {}
        runs.append((trace.detach(), abl, cams))
    return runs, conv


def _result(t, i: int, abl, cams, conv, size, opts: MapOptions, classes, cue) -> Tuple[MapResult, dict, dict]:
    """Image ``i`` of one run as a MapResult (heatmaps filled in later) plus its unscaled maps and Grad-CAMs."""
    ti = t[i]
    maps = {n: upsample(ti.layers[n].map(opts.gain)[0].numpy(), size) for n in conv}
    cam = {n: upsample(c[i], size) for n, c in cams.items()}
    table = layer_statistics(ti, 0)
    for r in table:
        r["dprob_pred"] = float(abl[r["layer"]][i]) if abl is not None else float("nan")
    native = {n: lt.map(opts.gain)[0].numpy() for n, lt in ti.layers.items() if n in conv or lt.kind == "dense"}
    res = MapResult(trace=ti, native=native, heatmaps={}, raw={n: lt.agreement[0].numpy() for n, lt in ti.layers.items()},
                    top_pass1=topk(ti.logits_pass1[0], classes, opts.k), top_pass2=topk(ti.logits_pass2[0], classes, opts.k),
                    table=table, logits=ti.logits_pass2[0].numpy(), cue=cue)
    return res, maps, cam


def _scale(results: List[Tuple[MapResult, dict, dict]], opts: MapOptions, with_cams: bool) -> None:
    """Normalise heatmaps (and Grad-CAMs) in place: one scale per layer shared by the results (or one for all)."""
    if len(results) == 2:  # cued and uncued: one colour scale per layer for both
        heats, scales = normalize_shared([m for _, m, _ in results], opts.signed, opts.joint)
        cams = normalize_shared([c for _, _, c in results], opts.signed, opts.joint)[0] if with_cams else [{}, {}]
    else:
        heat, scales = normalize_with_scales(results[0][1], opts.signed, opts.joint)
        heats = [heat]
        cams = [normalize(results[0][2], opts.signed, opts.joint) if with_cams else {}]
    for (res, _, _), h, c in zip(results, heats, cams):
        res.heatmaps, res.gradcam, res.scales = h, c, dict(scales)


def _explain_gatta(net, x, query, cue_name, opts: MapOptions, names, true_label, display) -> List[Explanation]:
    with temporarily_eval(net):
        runs, conv = _gatta_runs(net, x, query, opts)
    alphas = runs[0][0].alphas
    n_classes = runs[0][0].logits_pass2.shape[1]
    classes = _class_names(names, n_classes)
    labels = _labels(true_label, x.shape[0], n_classes)
    untrained = is_untrained(alphas)
    warn_if_untrained(alphas, opts.gain, stacklevel=4)
    size = tuple(x.shape[2:])
    out = []
    for i in range(x.shape[0]):
        results = [_result(t, i, abl, cams, conv, size, opts, classes, cue_name if j == 0 else None)
                   for j, (t, abl, cams) in enumerate(runs)]
        _scale(results, opts, bool(opts.gradcam and conv))
        first = results[0][0]
        cued, uncued = (first, results[1][0] if len(results) == 2 else None) if query is not None else (None, first)
        image, inverted, original, where = display(i)
        out.append(Explanation(image=image, classes=classes, options=opts, uncued=uncued, cued=cued, cue=cue_name,
                               true_label=labels[i], inverted=inverted, original=original, untrained=untrained,
                               placement=where))
    return out


def _explain_plain(net, x, opts: MapOptions, names, true_label, display) -> List[Explanation]:
    if opts.cue is not None:
        raise ValueError(f"a top-down cue needs a GAttA model: {type(net).__name__} has no GAttA layers, so there is "
                         "no global query to replace")
    offered = gradcam_layers(net)
    layers = list(opts.layers) if opts.layers is not None else offered
    unknown = [n for n in layers if n not in offered]
    if unknown:
        raise ValueError(unknown_name_message("conv stage", unknown[0], offered) + f" (conv stages: {offered})")
    with temporarily_eval(net), torch.no_grad():
        logits = net(x)
    if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"explain needs a GAttA model or a classifier returning (batch, classes) logits; "
                         f"{type(net).__name__} returned {shape}")
    n_classes = logits.shape[1]
    classes = _class_names(names, n_classes)
    labels = _labels(true_label, x.shape[0], n_classes)
    _check_target(opts, n_classes)
    pred = logits.argmax(1)
    target = pred if opts.gradcam_target is None else torch.full_like(pred, opts.gradcam_target)
    with temporarily_eval(net):
        cams = _gradcams(net, x, layers, target) if opts.gradcam and layers else {}
    size = tuple(x.shape[2:])
    out = []
    for i in range(x.shape[0]):
        top = topk(logits[i], classes, opts.k)
        maps = normalize({n: upsample(c[i], size) for n, c in cams.items()}, opts.signed, opts.joint)
        res = MapResult(trace=None, native={}, heatmaps={}, raw={}, top_pass1=top, top_pass2=top, table=[],
                        logits=logits[i].detach().cpu().numpy(), gradcam=maps)
        image, inverted, original, where = display(i)
        out.append(Explanation(image=image, classes=classes, options=opts, uncued=res, true_label=labels[i],
                               inverted=inverted, original=original, is_gatta=False, placement=where))
    return out


def explain_batch(model, prepared: Inputs, options: Optional[MapOptions] = None, *, true_label: Labels = None,
                  classes: Optional[Sequence[str]] = None, **overrides: Any) -> List[Explanation]:
    """Explain every image of a batch with one trace per query, one batched ablation per layer and one Grad-CAM
    per layer.

    Args: as :func:`explain`.
    Returns:
        One :class:`Explanation` per image.
    """
    opts = _options(options, overrides)
    net, names = _net_and_classes(model, classes)
    x, shown, inverted, originals, _ = _as_batch(prepared)
    x = x.to(next(net.parameters()).device)

    preprocess = model.preprocess if isinstance(model, LoadedModel) else None

    def display(i: int):
        image = np.asarray(shown[i] if shown is not None else image_for_display(x[i]), dtype=np.float32)
        o = originals[i]
        where = placement_of(o.size, preprocess, tuple(x.shape[2:])) if o is not None else None
        return image, inverted[i], o, where

    query, cue_name = resolve_cue(model, opts.cue)  # a cue for a plain CNN is refused here, naming the model
    if not is_gatta(net):
        return _explain_plain(net, x, opts, names, true_label, display)
    return _explain_gatta(net, x, query, cue_name, opts, names, true_label, display)


def explain(model, prepared: Inputs, options: Optional[MapOptions] = None, *, true_label: Labels = None,
            classes: Optional[Sequence[str]] = None, **overrides: Any) -> Union[Explanation, List[Explanation]]:
    """Explain images with a GAttA model (maps, both passes, layer table, Grad-CAM) or a plain CNN (predictions,
    Grad-CAM).

    Args:
        model: a :class:`LoadedModel` (``gv.load_model(...)``), a GAttA model (``gv.GAttANet``,
            ``gv.gatta_resnet18()``...) or a plain CNN. Run in eval mode; its own train/eval flags are restored.
        prepared: a :class:`PreparedImage`, a list of them, or a float tensor normalised like the training data:
            one image (C, H, W) or (1, C, H, W), or a batch (B, C, H, W).
        options: what to compute (:class:`MapOptions`; default ``MapOptions()``).
        true_label: class index (one, or one per image), if known.
        classes: class names (default: the LoadedModel's, or "0", "1", ...).
        **overrides: fields of :class:`MapOptions` to change (``layers``, ``signed``, ``joint``, ``gain``, ``cue``,
            ``compare``, ``gradcam``, ``gradcam_target``, ``ablation``, ``k``).
    Returns:
        An :class:`Explanation` for one image (a PreparedImage, (C, H, W) or (1, C, H, W)); a list of them
        for a batch or a list (:func:`explain_batch` always returns a list).
    Raises:
        ValueError: bad layer names, input that is not a float image tensor (e.g. uint8), an unknown option, a
            cue the model cannot take (a plain CNN, no stored class queries, unknown class...).
    Warns:
        UntrainedGAttAWarning: every alpha is 0 (the GAttA parameters were never trained).

    Examples:
        >>> import gatta_viz as gv
        >>> lm = gv.load_model()                                  # the bundled GAttA ResNet, Fashion-MNIST
        >>> x, y = gv.load_fashion_mnist("test").tensors(1)
        >>> ex = gv.explain(lm, x[0], true_label=int(y[0]), gradcam=False)
        >>> ex.prediction["label"], ex.classes[ex.true_label]
        ('Ankle boot', 'Ankle boot')
        >>> sorted(ex.alphas), ex.heatmaps["layer2"].shape        # maps at the input's size
        (['fc', 'layer1', 'layer2', 'layer3'], (28, 28))
    """
    out = explain_batch(model, prepared, options, true_label=true_label, classes=classes, **overrides)
    return out[0] if _is_single(prepared) else out


def _is_single(prepared: Inputs) -> bool:
    if isinstance(prepared, PreparedImage):
        return True
    if torch.is_tensor(prepared):
        return prepared.dim() == 3 or (prepared.dim() == 4 and prepared.shape[0] == 1)
    return False


def explanation_from_trace(trace, image, index: int = 0, options: Optional[MapOptions] = None, *,
                           classes: Optional[Sequence[str]] = None, true_label: Optional[int] = None,
                           cued_trace=None, cue: Optional[str] = None, **overrides: Any) -> Explanation:
    """The record of one image of a trace already computed (no forward pass: no Grad-CAM, no ablation column).

    Args:
        trace: a trace from ``model.trace(x)`` (without the cue when ``cued_trace`` is given).
        image: the input as the model saw it ((C, H, W) tensor, min-max scaled for display, or (H, W[, C]) array
            in [0, 1]); maps are upsampled to its size.
        index: which image of the trace.
        options: :class:`MapOptions` (``gain``, ``signed``, ``joint``, ``layers``); ``**overrides`` change fields.
        classes: class names (default "0", "1", ...).
        true_label: the true class, if known.
        cued_trace: the same images traced under a top-down cue (``model.trace(x, query=q)``): the record then
            holds both results (uncued from ``trace``), each layer's maps on one colour scale.
        cue: the cue's name (default "custom query" with ``cued_trace``); with ``cue`` alone, ``trace`` is taken to
            be cued already.
    Returns:
        An :class:`Explanation` (its layer table's ``dprob_pred`` is NaN: no ablation was run).
    """
    opts = _options(options, {**overrides, "gradcam": False, "ablation": False})
    shown = np.asarray(image_for_display(image), dtype=np.float32)
    n_classes = trace.logits_pass2.shape[1]
    names = _class_names(list(classes) if classes is not None else None, n_classes)
    label = _labels(true_label, 1, n_classes)[0]
    conv = _chosen_conv(trace, opts.layers)
    name = (cue or CUSTOM_QUERY) if cued_trace is not None else cue
    runs = [(cued_trace, name), (trace, None)] if cued_trace is not None else [(trace, name)]
    results = [_result(t.detach(), index, None, {}, conv, shown.shape[:2], opts, names, c) for t, c in runs]
    _scale(results, opts, False)
    first = results[0][0]
    cued, uncued = (first, results[1][0] if len(results) == 2 else None) if name is not None else (None, first)
    return Explanation(image=shown, classes=names, options=opts, uncued=uncued, cued=cued, cue=name, true_label=label,
                       untrained=is_untrained(trace.alphas))
