"""Top-down cues: one global query per class, to replace the query a GAttA model pools from the image.

The default cue of a class is the mean pass-1 global query (q_avg) of the training images of that class:
what the network's attention agrees on, on average, when that class is all there is to see. For a model
trained on two-garment scenes those are the training garments alone on the scene canvas, placed as in a scene
(:func:`gatta_viz.data.scenes.load_singles`; ``gatta-viz cues`` picks them). Passing it as
``model.trace(x, query=...)`` asks "what would the network attend to if it were looking for this class?".
``gatta-viz cues CHECKPOINT OUT`` stores them with a checkpoint (``LoadedModel.cue(name)`` reads them).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch
from tqdm import tqdm

from ..core.hooks import temporarily_eval
from ..data.datasets import ImageData, eval_batches
from ..models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

__all__ = ["class_queries", "store_class_queries"]


@torch.no_grad()
def class_queries(model: torch.nn.Module, data: ImageData, batch_size: int = 500, progress: bool = True) -> torch.Tensor:
    """Mean pass-1 q_avg of the images of each class, in eval mode (the model's flags are restored).

    Args:
        model: a GAttA model.
        data: images with one label each (e.g. the training split).
        batch_size: images per forward.
        progress: show a tqdm bar.
    Returns:
        (classes, d) tensor; row c is the mean over the images labelled c.
    Raises:
        ValueError: not a GAttA model, labels that are not one per image, or a class without images.
    """
    if not hasattr(model, "trace"):
        raise ValueError(f"class queries need a GAttA model, got {type(model).__name__}")
    if data.labels.dim() != 1:
        raise ValueError("class queries are averaged over images holding one item each: labels must be (N,)")
    k = len(data.classes)
    sums = torch.zeros(k, model.d, dtype=torch.float64)
    counts = torch.bincount(data.labels, minlength=k)
    if (counts == 0).any():
        missing = [data.classes[c] for c in torch.nonzero(counts == 0).flatten().tolist()]
        raise ValueError(f"no images of classes {missing} to average a query over")
    device = next(model.parameters()).device
    with temporarily_eval(model):
        bar = tqdm(total=math.ceil(len(data) / batch_size), desc="class queries", disable=not progress)
        for images, y in eval_batches(data, batch_size):  # in memory, or an image folder read batch by batch
            q = model.trace(data.normalize(images).to(device)).q_avg.double().cpu()
            sums.index_add_(0, y, q)
            bar.update(1)
        bar.close()
    return (sums / counts.unsqueeze(1)).float()


def store_class_queries(src: str, dst: str, data: ImageData,
                        calibrate: Optional[Callable[[torch.nn.Module, torch.Tensor], Dict[str, object]]] = None,
                        **kwargs) -> Dict[str, object]:
    """Compute :func:`class_queries` of checkpoint ``src`` on ``data`` and write ``src`` with them to ``dst``.

    Args:
        src: a GAttA checkpoint.
        dst: destination path (may equal ``src``).
        data: the images to average over (the training split the model was trained on).
        calibrate: optional ``f(model, means) -> dict`` with a ``"sign"`` entry (e.g.
            :func:`gatta_viz.metrics.cueing.calibrate_cue_sign` on training scenes); stored with the queries,
            it makes ``LoadedModel.cue`` use the steering definition by default.
        **kwargs: passed to :func:`class_queries`.
    Returns:
        What was stored (also written into the checkpoint's meta under ``"class_queries"``).
    """
    lm = load_checkpoint(src)
    queries = class_queries(lm.model, data, **kwargs)
    obj = read_checkpoint(src)
    info: Dict[str, object] = {"definition": "mean pass-1 q_avg of the images of each class", "dataset": data.name,
                               "images": len(data)}
    if calibrate is not None:
        info.update(calibrate(lm.model, queries))
        info["default_cue"] = ("steering: sign x (class mean - mean over classes), rescaled to the class mean's "
                               "norm; sign chosen on training scenes")
    save_checkpoint(dst, lm.model, lm.builder, lm.kwargs, lm.classes, lm.preprocess,
                    {**lm.meta, "class_queries": info}, obj.get("train_state"), class_queries=queries)
    return info
