"""gatta_viz: GAttANet models and tools to see what their global attention agreement does."""
from .mechanism import ConvKeyQuery, DenseKeyQuery, agreement, global_query, modulate
from .trace import GAttATrace, LayerTrace
from .wrapper import GAttANet, forward_hooks, temporarily_eval
from .backbones import CompactResNet, ToyCNN
from .builders import (
    BUILDERS,
    build_model,
    compact_resnet,
    gatta_compact_resnet,
    gatta_resnet18,
    gatta_resnet34,
    gatta_resnet50,
    gatta_toy,
    resnet,
    toy_cnn,
)
from .checkpoint import (
    BUNDLED,
    DEFAULT_MODEL,
    LoadedModel,
    bundled_path,
    load_checkpoint,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from .export import export_checkpoint
from .data import ImageData, load_dataset, load_fashion_mnist
from .preprocess import ImageError, PreparedImage, load_image, prepare_image, to_model_input

__version__ = "0.1.0"

# --- analysis API ---
from .heatmaps import conv_heatmaps, normalize, upsample
from .overlays import colorize, overlay, to_rgb_array
from .figures import alpha_bars, fig3, image_for_display, save_figure
from .interactive import class_bars, layer_slider
from .contributions import ablation_scores, contribution_table, layer_statistics
from .embedding import QEmbedding, collect_q_avg, embedding_figure, pca_2d, q_avg_embedding
from .attributions import compare_with_captum, gradcam, integrated_gradients, rank_correlation, saliency
from .faithfulness import agreement_saliency, auc, explain_func, faithfulness_report, perturbation_curve, perturbed_images
from .imputation import noisy_linear_impute
from .explanation import Explanation, explain, topk
