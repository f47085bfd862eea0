"""gatta_viz: GAttANet models and tools to see what their global attention agreement does.

The package is laid out by job, and dependencies point one way (a test checks it)::

    core      the mechanism's equations, the two-pass network wrapper, traces (torch only)
    models    backbones, builders, checkpoints, the bundled weights
    data      datasets, two-garment scenes, image decoding and preprocessing
    training  train, evaluate, export, recalibrate, class cues
    analysis  heatmaps, overlays, figures, plotly views, contributions, embeddings, captum attributions
    metrics   faithfulness (deletion/insertion, ROAD) and imputation
    cli       the ``gatta-viz`` command, a module per sub-command

Every public name is available here (``gv.load_model``, ``gv.fig3``...); each is imported on first use,
so ``import gatta_viz`` does not load torch, matplotlib or captum until a name that needs them is used.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List

__version__ = "0.1.0"

# module (relative to this package) -> the public names it provides
_EXPORTS: Dict[str, List[str]] = {
    "core.mechanism": ["ConvKeyQuery", "DenseKeyQuery", "agreement", "global_query", "modulate"],
    "core.trace": ["GAttATrace", "LayerTrace"],
    "core.network": ["GAttANet"],
    "core.hooks": ["forward_hooks", "temporarily_eval"],
    "core.hook_scope": ["hook_passes"],
    "core.pass_statistics": ["PassStatistics", "SharedStatisticsError"],
    "models.backbones": ["CompactResNet", "ToyCNN"],
    "models.builders": [
        "BUILDERS", "build_model", "compact_resnet", "gatta_compact_resnet", "gatta_resnet18", "gatta_resnet34",
        "gatta_resnet50", "gatta_toy", "resnet", "toy_cnn",
    ],
    "models.checkpoint": [
        "BUNDLED", "DEFAULT_MODEL", "LoadedModel", "bundled_path", "load_checkpoint", "load_model", "read_checkpoint",
        "save_checkpoint",
    ],
    "data.datasets": ["ImageData", "load_dataset", "load_fashion_mnist"],
    "data.scenes": ["SceneData", "export_scenes", "load_scenes", "load_singles", "make_scenes", "make_singles"],
    "data.clutter": ["ClutterData", "export_clutter", "load_clutter", "make_clutter"],
    "data.preprocess": [
        "ImageError", "ImageLimits", "PreparedImage", "decoding_cost", "image_limits", "load_image", "prepare_image",
        "to_model_input",
    ],
    "training.export": ["export_checkpoint"],
    "training.cues": ["class_queries", "store_class_queries"],
    "training.recalibrate": ["recalibrate_checkpoint", "recalibrate_statistics"],
    "analysis.heatmaps": ["conv_heatmaps", "normalize", "normalize_with_scales", "upsample"],
    "analysis.overlays": [
        "OUTLINE_COLOURS", "Outline", "as_outlines", "colorize", "draw_outlines", "outlines_from_index", "overlay",
        "overlay_on_original", "rescale_outlines", "to_rgb_array",
    ],
    "analysis.figures": ["Fig3Renderer", "alpha_bars", "fig3", "image_for_display", "normalize_shared", "save_figure"],
    "analysis.style": ["map_legend"],
    "analysis.checks": ["UntrainedGAttAWarning"],
    "analysis.interactive": ["class_bars", "layer_slider"],
    "analysis.contributions": ["ablation_scores", "contribution_table", "layer_statistics"],
    "analysis.embedding": ["QEmbedding", "collect_q_avg", "embedding_figure", "pca_2d", "q_avg_embedding"],
    "analysis.attributions": ["compare_with_captum", "gradcam", "integrated_gradients", "rank_correlation", "saliency"],
    "analysis.explanation": ["Explanation", "explain", "explain_batch", "resolve_cue", "topk"],
    "metrics.faithfulness": [
        "agreement_saliency", "auc", "explain_func", "faithfulness_report", "perturbation_curve", "perturbed_images",
        "layer_saliencies", "trace_saliency",
    ],
    "metrics.localization": ["centre_prior", "energy_in_mask", "localization_report", "mask_share", "pointing_hit"],
    "metrics.sanity": ["randomization_report", "randomized_copies"],
    "metrics.cueing": ["both_items_correct", "cue_examples", "measure_cues", "readout_by_cueing", "scene_report"],
    "metrics.imputation": ["noisy_linear_impute"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the module that provides ``name`` on first use (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'gatta_viz' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
