"""Shared test settings: one torch thread (the models under test are small, and results stay deterministic)."""
import os

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
