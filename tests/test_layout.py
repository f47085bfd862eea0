"""The package layout: dependencies point one way, heavy libraries stay where they belong, the public API
keeps its names, `import gatta_viz` loads nothing heavy. Imports are read from the source (every
module, top-level and inside functions), not checked by eye."""
import ast
import os
import subprocess
import sys
from typing import Dict, List, Set, Tuple

import pytest

import gatta_viz as gv

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gatta_viz")

# folder -> the folders of gatta_viz it may import (itself included)
ALLOWED = {
    "core": {"core"},
    "models": {"core", "models"},
    "data": {"data"},
    "training": {"core", "models", "data", "training"},
    "analysis": {"core", "models", "data", "analysis"},
    "metrics": {"core", "models", "data", "analysis", "metrics"},
    "cli": {"core", "models", "data", "training", "analysis", "metrics", "cli"},
}
# third-party library -> the modules allowed to import it (folder or folder/module)
RESTRICTED = {
    "streamlit": set(),
    "matplotlib": {"analysis"},
    "captum": {"analysis/attributions"},
    "plotly": {"analysis/interactive"},
    "PIL": {"data", "analysis", "cli"},
}
# what core may import at all
CORE_OK = {"torch", "__future__", "contextlib", "dataclasses", "typing", "difflib"}


def imports_of(source: str, module: str) -> List[Tuple[str, int]]:
    """Absolute names imported by ``source`` (module path like 'core/network'), with line numbers.

    Relative imports are resolved against the module's package, so '..models.checkpoint' in
    'cli/train' becomes 'gatta_viz.models.checkpoint'.
    """
    pkg = ["gatta_viz"] + module.split("/")[:-1]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
                if not node.module:  # "from . import x": each x is a module of the package
                    out += [(f"{name}.{a.name}", node.lineno) for a in node.names]
                    continue
            else:
                name = node.module
            out.append((name, node.lineno))
    return out


def violations(sources: Dict[str, str]) -> List[str]:
    """Every broken layout rule in ``sources`` (module path 'folder/name' -> source text)."""
    bad = []
    for module, src in sources.items():
        folder = module.split("/")[0]
        if folder not in ALLOWED:
            continue  # the top-level __init__ (lazy name table) only
        for name, line in imports_of(src, module):
            top = name.split(".")[0]
            where = f"{module}.py:{line} imports {name}"
            if top == "gatta_viz":
                parts = name.split(".")
                target = parts[1] if len(parts) > 1 else ""
                if target not in ALLOWED[folder]:
                    bad.append(f"{where}: {folder}/ may import only {sorted(ALLOWED[folder])}")
            elif top in RESTRICTED and folder not in RESTRICTED[top] and module not in RESTRICTED[top]:
                bad.append(f"{where}: {top} is allowed only in {sorted(RESTRICTED[top]) or 'no module of gatta_viz'}")
            elif folder == "core" and top not in CORE_OK:
                bad.append(f"{where}: core/ imports torch and the standard library only")
    return bad


def package_sources() -> Dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                out[os.path.relpath(path, ROOT)[:-3].replace(os.sep, "/")] = open(path).read()
    return out


def test_every_folder_exists_and_the_package_keeps_the_layout_rules():
    sources = package_sources()
    assert {m.split("/")[0] for m in sources if "/" in m} == set(ALLOWED)
    assert violations(sources) == []


@pytest.mark.parametrize("module, line, rule", [
    ("core/network", "import matplotlib.pyplot as plt", "matplotlib is allowed only in"),
    ("core/trace", "from PIL import Image", "PIL is allowed only in"),
    ("core/mechanism", "import numpy as np", "core/ imports torch and the standard library only"),
    ("core/network", "from ..models.builders import BUILDERS", "core/ may import only ['core']"),
    ("models/checkpoint", "from ..analysis.figures import fig3", "models/ may import only"),
    ("analysis/figures", "from ..metrics.faithfulness import auc", "analysis/ may import only"),
    ("analysis/heatmaps", "from captum.attr import Saliency", "captum is allowed only in ['analysis/attributions']"),
    ("data/preprocess", "    import streamlit as st", "streamlit is allowed only in no module"),
])
def test_the_checker_catches_a_forbidden_import(module, line, rule):
    sources = package_sources()
    body = f"def f():\n{line}\n" if line.startswith(" ") else line + "\n"
    sources[module] = sources[module] + body
    found = violations(sources)
    assert len(found) == 1 and rule in found[0] and module in found[0], found


# every public name `import gatta_viz as gv` offered before the layout changed
PUBLIC_NAMES = [
    'BUILDERS', 'BUNDLED', 'CompactResNet', 'ConvKeyQuery', 'DEFAULT_MODEL', 'DenseKeyQuery', 'Explanation', 'GAttANet',
    'GAttATrace', 'ImageData', 'ImageError', 'LayerTrace', 'LoadedModel', 'PreparedImage', 'QEmbedding', 'ToyCNN',
    'ablation_scores', 'agreement', 'agreement_saliency', 'alpha_bars', 'auc', 'build_model', 'bundled_path',
    'class_bars', 'collect_q_avg', 'colorize', 'compact_resnet', 'compare_with_captum', 'contribution_table',
    'conv_heatmaps', 'embedding_figure', 'explain', 'explain_func', 'export_checkpoint', 'faithfulness_report', 'fig3',
    'forward_hooks', 'gatta_compact_resnet', 'gatta_resnet18', 'gatta_resnet34', 'gatta_resnet50', 'gatta_toy',
    'global_query', 'gradcam', 'image_for_display', 'integrated_gradients', 'layer_slider', 'layer_statistics',
    'load_checkpoint', 'load_dataset', 'load_fashion_mnist', 'load_image', 'load_model', 'modulate',
    'noisy_linear_impute', 'normalize', 'overlay', 'pca_2d', 'perturbation_curve', 'perturbed_images', 'prepare_image',
    'q_avg_embedding', 'rank_correlation', 'read_checkpoint', 'resnet', 'saliency', 'save_checkpoint', 'save_figure',
    'temporarily_eval', 'to_model_input', 'to_rgb_array', 'topk', 'toy_cnn', 'upsample',
]


def test_every_public_name_is_still_there_and_resolves():
    missing = [n for n in PUBLIC_NAMES if n not in gv.__all__]
    assert missing == []
    for n in gv.__all__:
        assert getattr(gv, n) is not None, n
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gv.nope  # noqa: B018


def test_import_gatta_viz_and_the_cli_help_load_no_heavy_library():
    code = ("import sys, gatta_viz, gatta_viz.cli\n"
            "heavy = [m for m in ('torch', 'matplotlib', 'captum', 'plotly', 'streamlit', 'PIL', 'numpy') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    helped = subprocess.run([sys.executable, "-m", "gatta_viz.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "recalibrate" in helped.stdout and "explain" in helped.stdout
