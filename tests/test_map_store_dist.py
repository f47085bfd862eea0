"""Several processes write one map store: two processes under torchrun (gloo, CPU) give a store identical, byte for
byte, to one process's; independent jobs given a rank and a world size do too; each rank's share of the chunks."""
import os
import shutil
import subprocess
import sys

import pytest

import gatta_viz as gv
from gatta_viz.store.distributed import my_chunks
from test_map_store import assert_same_store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_each_rank_gets_a_contiguous_share_and_every_chunk_once():
    assert my_chunks(range(10), 0, 3) == [0, 1, 2, 3] and my_chunks(range(10), 2, 3) == [7, 8, 9]
    for n, world in [(0, 2), (1, 2), (7, 3), (235, 8)]:
        shares = [my_chunks(range(n), r, world) for r in range(world)]
        assert sum(shares, []) == list(range(n))
        assert max(map(len, shares)) - min(map(len, shares)) <= (1 if n else 0)


def test_two_processes_under_torchrun_write_the_same_store_as_one(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    args = ["--n", "512", "--chunk", "128", "--threads", "1", "--no-progress"]
    two = str(tmp_path / "two.zarr")
    # "--" ends torchrun's own options: its argparse would take "--n" for an abbreviation of --nnodes...
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "gatta_viz.cli", "--", "maps", *args, "--out", two]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("512 images of fashion-mnist") == 1  # rank 0 alone reports
    lm = gv.load_model("fmnist-gatta-resnet")
    one = gv.compute_maps(lm, "fashion-mnist", str(tmp_path / "one.zarr"), n=512, chunk=128, progress=False)
    assert one.complete and gv.open_maps(two).complete
    assert gv.open_maps(two).attrs == one.attrs
    assert_same_store(two, one.path)


def test_independent_jobs_given_rank_and_world_size_fill_one_store(tmp_path):
    lm = gv.load_model("fmnist-gatta-resnet")
    one = gv.compute_maps(lm, "fashion-mnist", str(tmp_path / "one.zarr"), n=50, chunk=10, progress=False)
    path = str(tmp_path / "jobs.zarr")
    first = gv.compute_maps(lm, "fashion-mnist", path, n=50, chunk=10, rank=0, world_size=2, progress=False)
    assert first.done().tolist() == [True, True, True, False, False] and not first.complete
    last = gv.compute_maps(lm, "fashion-mnist", path, n=50, chunk=10, rank=1, world_size=2, progress=False)
    assert last.complete  # the job that wrote the last chunk marks the store complete
    assert_same_store(path, one.path)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size\)"):
        gv.compute_maps(lm, "fashion-mnist", path, n=50, chunk=10, rank=2, world_size=2)
