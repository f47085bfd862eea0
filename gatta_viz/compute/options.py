"""What to compute for an explanation, as one object built once by each entry point (API, CLI, app)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import torch

__all__ = ["MapOptions"]



def checked_replace(options: Any, changes: Dict[str, Any], kind: str) -> Any:
    """A copy of a frozen options dataclass with ``changes`` applied (validated again by its ``__post_init__``).

    Args:
        options: a :class:`MapOptions`, :class:`~gatta_viz.render.options.FigureOptions`...
        changes: field name -> new value.
        kind: what the options are called in the message ("map", "figure").
    Returns:
        The new options object.
    Raises:
        ValueError: an unknown option name (the message lists the known ones) or a bad value.
    """
    known = {f.name for f in dataclasses.fields(options)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown {kind} option(s) {unknown}; options are {sorted(known)}")
    return dataclasses.replace(options, **changes)

@dataclass(frozen=True, eq=False)
class MapOptions:
    """Options of the maps an explanation computes.

    Attributes:
        gain: maps of alpha x agreement (default: > 0 boosted by pass 2, < 0 suppressed); False: raw agreement,
            whose sign is set by training.
        signed: diverging maps centred at 0 (default); False: rectified (positive values only).
        joint: one colour scale for all layers; default one per layer.
        layers: conv layers to show (None: every GAttA conv layer, or a plain CNN's top-level conv stages).
        cue: a top-down cue: a class name (the model's stored class query) or a query tensor (d,) / (B, d);
            checked against the model when it is used (:func:`gatta_viz.compute.cue.resolve_cue`).
        compare: with a cue, also explain each image without it (the uncued row), on shared colour scales.
        gradcam: also compute captum Grad-CAM at the same conv layers (imports captum).
        gradcam_target: Grad-CAM's class index (None: each run's predicted class).
        ablation: compute the per-layer ablation column of the layer table (one forward per layer).
        k: how many top classes to list.
    Raises:
        ValueError: a value of the wrong type or range (``k`` < 1, a layer list that is empty or not names...).

    Examples:
        >>> from gatta_viz import MapOptions
        >>> raw = MapOptions(gain=False)
        >>> raw.map_kind
        'raw agreement (sign set by training)'
        >>> raw.replace(joint=True).joint, raw.joint
        (True, False)
    """

    gain: bool = True
    signed: bool = True
    joint: bool = False
    layers: Optional[Tuple[str, ...]] = None
    cue: Union[None, str, torch.Tensor] = None
    compare: bool = True
    gradcam: bool = True
    gradcam_target: Optional[int] = None
    ablation: bool = True
    k: int = 3

    def __post_init__(self) -> None:
        for name in ("gain", "signed", "joint", "compare", "gradcam", "ablation"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MapOptions.{name} must be True or False, got {getattr(self, name)!r}")
        if self.layers is not None:
            if isinstance(self.layers, str) or not all(isinstance(n, str) and n for n in self.layers):
                raise ValueError(f"MapOptions.layers must be a list of layer names, got {self.layers!r}")
            if not self.layers:
                raise ValueError("MapOptions.layers is empty; give at least one layer or None for all")
            object.__setattr__(self, "layers", tuple(self.layers))
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"MapOptions.k must be a whole number >= 1, got {self.k!r}")
        t = self.gradcam_target
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 0):
            raise ValueError(f"MapOptions.gradcam_target must be a class index >= 0 or None, got {t!r}")

    def replace(self, **changes: Any) -> "MapOptions":
        """A copy with some fields changed (validated again).

        Args:
            **changes: field name -> new value (``gain``, ``signed``, ``joint``, ``layers``, ``cue``...).
        Returns:
            a new :class:`MapOptions`; this one is unchanged (it is frozen).
        Raises:
            ValueError: an unknown option name (the message lists the known ones) or a bad value.
        """
        return checked_replace(self, changes, "map")

    def __eq__(self, other: object) -> bool:
        """Field by field; a query tensor given as ``cue`` compares by value (``torch.equal``)."""
        if not isinstance(other, MapOptions):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if torch.is_tensor(a) or torch.is_tensor(b):
                if not (torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)):
                    return False
            elif a != b:
                return False
        return True

    def __hash__(self) -> int:
        return hash(tuple(id(v) if torch.is_tensor(v) else v for v in (getattr(self, f.name)
                                                                          for f in dataclasses.fields(self))))

    @property
    def map_kind(self) -> str:
        """``"alpha x agreement"`` or ``"raw agreement (sign set by training)"`` (as written in JSON summaries)."""
        return "alpha x agreement" if self.gain else "raw agreement (sign set by training)"
