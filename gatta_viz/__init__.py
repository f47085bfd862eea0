"""gatta_viz: GAttANet models and tools to see what their global attention agreement does.

The package is laid out by job, and dependencies point one way (a test checks it)::

    core      the mechanism's equations, the two-pass network wrapper, traces (torch only)
    models    backbones, builders, checkpoints, the bundled weights, class cues (top-down queries per class)
    data      datasets, image folders, two-garment scenes, garments in clutter, image decoding and preprocessing
    training  train, evaluate, export, recalibrate, store class cues
    compute   explanations as numbers: ``explain`` (maps of both passes, a top-down cue and the uncued result,
              layer table, Grad-CAM; plain CNNs too), options (``MapOptions``), the record, its JSON and .npz
    render    pictures and files from explanation records: Fig. 3, overlays, outlines, ``FigureOptions``
    analysis  plotly views, q_avg embeddings, plots of the localization, sanity and cue measurements
    metrics   faithfulness (deletion/insertion, ROAD), localization on garment masks, parameter-randomisation
              sanity checks, cue measurements on scenes
    cli       the ``gatta-viz`` command, a module per sub-command
    app       the Streamlit page of ``gatta-viz app`` (shipped in the package; the only user of streamlit)

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
    "core.trace": ["GAttATrace", "LayerTrace", "UnknownLayerError"],
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
        "save_checkpoint", "validate_checkpoint",
    ],
    "data.datasets": ["ImageData", "load_dataset", "load_fashion_mnist"],
    "data.folders": ["FolderData", "find_layout", "load_folder_for_model", "load_image_folder_splits"],
    "data.scenes": [
        "Composite", "SceneData", "compose_items", "export_scenes", "load_scenes", "load_singles", "make_scenes",
        "make_singles",
    ],
    "data.clutter": ["ClutterData", "export_clutter", "load_clutter", "make_clutter"],
    "data.preprocess": [
        "ImageError", "ImageLimits", "PreparedImage", "decoding_cost", "image_limits", "load_image", "prepare_image",
        "to_model_input",
    ],
    "training.export": ["export_checkpoint"],
    "training.cues": ["class_queries", "store_class_queries"],
    "training.recalibrate": ["recalibrate_checkpoint", "recalibrate_statistics"],
    "models.kinds": ["is_gatta"],
    "models.cues": ["steering_queries"],
    "compute.options": ["MapOptions"],
    "compute.maps": ["conv_heatmaps", "normalize", "normalize_shared", "normalize_with_scales", "upsample"],
    "compute.arrays": ["image_for_display", "to_rgb_array"],
    "compute.checks": ["UntrainedGAttAWarning"],
    "compute.contributions": ["ablation_scores", "contribution_table", "layer_statistics"],
    "compute.attributions": ["compare_with_captum", "gradcam", "integrated_gradients", "rank_correlation", "saliency"],
    "compute.cue": ["resolve_cue"],
    "compute.placement": ["Placement", "placement_of"],
    "compute.record": ["Explanation", "MapResult", "topk"],
    "compute.explain": ["explain", "explain_batch", "explanation_from_trace", "gradcam_layers"],
    "compute.dataset_views": ["ClassMeans", "StoreEmbedding", "StoredImage", "TableQuery", "class_mean_maps",
                              "q_avg_embedding_from_store", "query_table", "read_store_rows", "stored_image"],
    "render.options": ["FigureOptions"],
    "render.images": ["colorbar_strip", "colorize", "overlay", "overlay_on_original"],
    "render.outlines": ["OUTLINE_COLOURS", "Outline", "as_outlines", "outlines_from_index", "rescale_outlines"],
    "render.outline_draw": ["draw_outlines"],
    "render.overlays": ["explanation_overlays"],
    "render.fig3": ["Fig3Renderer", "fig3"],
    "render.save": ["alpha_bars", "save_figure"],
    "render.style": ["map_legend"],
    "render.plotly_bars": ["dense_bars"],
    "render.write": ["explanation_files", "write_explanation"],
    "render.dataset_figures": ["class_means_figure", "dataset_embedding_figure", "map_tiles", "save_dataset_figures"],
    "analysis.interactive": ["class_bars", "layer_slider"],
    "analysis.embedding": ["QEmbedding", "collect_q_avg", "embedding_figure", "pca_2d", "q_avg_embedding"],
    "metrics.faithfulness": [
        "agreement_saliency", "auc", "explain_func", "faithfulness_report", "perturbation_curve", "perturbed_images",
        "layer_saliencies", "trace_saliency",
    ],
    "metrics.localization": ["average_precision_in_mask", "centre_prior", "energy_in_mask", "fit_priors", "mask_share",
                             "pointing_hit", "region_gain", "roc_auc_in_mask", "topk_in_mask"],
    "metrics.localization_report": ["localization_report"],
    "metrics.sanity": ["randomization_report", "randomized_copies"],
    "metrics.cueing": ["both_items_correct", "cue_examples", "measure_cues", "readout_by_cueing", "scene_report"],
    "metrics.imputation": ["noisy_linear_impute"],
    "store.write": ["MapsConfig", "compute_maps"],
    "store.read": ["MapStore", "open_maps"],
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
