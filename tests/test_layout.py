"""The package layout: dependencies point one way, heavy libraries stay where they belong, the public API
keeps its names, `import gatta_viz` loads nothing heavy, computing an explanation loads no plotting library.
Imports are read from the source (every module, top-level and inside functions), not checked by eye.

Layers: core < models < data < compute (explanations as numbers) < render (pictures and files from explanation
records) < analysis, metrics < cli, app (the Streamlit page). The repository's top-level app/ folder (the page a
clone runs) may use only the public API (`import gatta_viz`) and gatta_viz.app."""
import ast
import os
import subprocess
import sys
from typing import Dict, List, Set, Tuple

import pytest

import gatta_viz as gv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.join(REPO, "gatta_viz")
TOP_APP = os.path.join(REPO, "app")

# folder -> the folders of gatta_viz it may import (itself included)
ALLOWED = {
    "core": {"core"},
    "models": {"core", "models"},
    "data": {"data"},
    "training": {"core", "models", "data", "training"},
    "compute": {"core", "models", "data", "compute"},
    "store": {"core", "models", "data", "compute", "store"},
    "render": {"core", "models", "data", "compute", "render"},
    "analysis": {"core", "models", "data", "compute", "store", "render", "analysis"},
    "metrics": {"core", "models", "data", "compute", "store", "render", "analysis", "metrics"},
    "cli": {"core", "models", "data", "training", "compute", "store", "render", "analysis", "metrics", "cli", "app"},
    "app": {"core", "models", "data", "training", "compute", "store", "render", "analysis", "metrics", "app"},
}
# third-party library -> the modules allowed to import it (folder or folder/module); the compute layer (compute/)
# imports none of matplotlib, plotly, PIL (drawing or otherwise) or streamlit, and captum only in its attributions
RESTRICTED = {
    "streamlit": {"app"},
    "matplotlib": {"analysis", "render"},
    "captum": {"compute/attributions"},
    "plotly": {"analysis/interactive", "render/plotly_bars", "app"},
    "PIL": {"data", "render", "analysis", "cli", "app"},
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


def package_sources(root: str = ROOT) -> Dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                out[os.path.relpath(path, root)[:-3].replace(os.sep, "/")] = open(path).read()
    return out


def top_app_violations(sources: Dict[str, str]) -> List[str]:
    """Imports of the top-level app/ folder that reach into gatta_viz other than its public API or gatta_viz.app."""
    bad = []
    for module, src in sources.items():
        for name, line in imports_of(src, "app/" + module):
            parts = name.split(".")
            if parts[0] == "gatta_viz" and len(parts) > 1 and parts[1] != "app":
                bad.append(f"app/{module}.py:{line} imports {name}: app/ may use only `import gatta_viz` and gatta_viz.app")
    return bad


def test_every_folder_exists_and_the_package_keeps_the_layout_rules():
    sources = package_sources()
    assert {m.split("/")[0] for m in sources if "/" in m} == set(ALLOWED)
    assert violations(sources) == []


def test_the_top_level_app_folder_uses_only_the_public_api_and_the_app_package():
    sources = package_sources(TOP_APP)
    assert "streamlit_app" in sources
    assert top_app_violations(sources) == []
    found = top_app_violations({"streamlit_app": "from gatta_viz.render.fig3 import fig3\nimport gatta_viz.app\n"})
    assert len(found) == 1 and "gatta_viz.render.fig3" in found[0]


@pytest.mark.parametrize("module, line, rule", [
    ("core/network", "import matplotlib.pyplot as plt", "matplotlib is allowed only in"),
    ("core/trace", "from PIL import Image", "PIL is allowed only in"),
    ("core/mechanism", "import numpy as np", "core/ imports torch and the standard library only"),
    ("core/network", "from ..models.builders import BUILDERS", "core/ may import only ['core']"),
    ("models/checkpoint", "from ..analysis.figures import fig3", "models/ may import only"),
    ("analysis/interactive", "from ..metrics.faithfulness import auc", "analysis/ may import only"),
    ("compute/maps", "from captum.attr import Saliency", "captum is allowed only in ['compute/attributions']"),
    ("compute/explain", "    import matplotlib.pyplot as plt", "matplotlib is allowed only in"),
    ("compute/record", "from PIL import ImageDraw", "PIL is allowed only in"),
    ("compute/maps", "import plotly.graph_objects as go", "plotly is allowed only in"),
    ("compute/explain", "from ..render.fig3 import fig3", "compute/ may import only"),
    ("render/fig3", "from ..analysis.interactive import class_bars", "render/ may import only"),
    ("data/preprocess", "    import streamlit as st", "streamlit is allowed only in ['app']"),
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
# names added with the compute/render split
NEW_NAMES = ['FigureOptions', 'MapOptions', 'MapResult', 'is_gatta', 'steering_queries', 'explanation_files',
             'write_explanation', 'explanation_overlays', 'normalize_shared', 'dense_bars', 'colorbar_strip',
             'gradcam_layers']


def test_every_public_name_is_still_there_and_resolves():
    missing = [n for n in PUBLIC_NAMES + NEW_NAMES if n not in gv.__all__]
    assert missing == []
    for n in gv.__all__:
        assert getattr(gv, n) is not None, n
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gv.nope  # noqa: B018


def test_explaining_without_gradcam_imports_neither_matplotlib_nor_captum():
    code = ("import sys, torch, gatta_viz as gv\n"
            "lm = gv.load_model('fmnist-gatta-toy')\n"
            "ex = gv.explain(lm, torch.zeros(1, 28, 28), gradcam=False)\n"
            "assert ex.heatmaps and ex.summary()['maps'] == 'alpha x agreement'\n"
            "print([m for m in ('matplotlib', 'captum', 'plotly', 'streamlit') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_import_gatta_viz_and_the_cli_help_load_no_heavy_library():
    code = ("import sys, gatta_viz, gatta_viz.cli\n"
            "heavy = [m for m in ('torch', 'matplotlib', 'captum', 'plotly', 'streamlit', 'PIL', 'numpy') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    helped = subprocess.run([sys.executable, "-m", "gatta_viz.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "recalibrate" in helped.stdout and "explain" in helped.stdout
