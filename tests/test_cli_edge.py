"""The CLI's edge by hand: argparse types (ranges, NaN, paths, addresses), one-line parse errors, strict JSON and
atomic writes that leave nothing behind when they fail."""
import argparse
import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from gatta_viz.cli import args as A
from gatta_viz.data.files import atomic_path, atomic_write, dumps_json, strict_json, write_json


@pytest.mark.parametrize("kind, good, bad", [
    (A.positive_int, ["1", " 7 "], ["0", "-1", "1.5", "x", ""]),
    (A.nonnegative_int, ["0", "3"], ["-1", "nan"]),
    (A.finite_float(0, 1, hi_open=True), ["0", "0.5"], ["1", "-0.1", "nan", "inf", "-inf", "x"]),
    (A.positive_float, ["1e-9", "3"], ["0", "-2", "nan"]),
    (A.probability, ["0", "1", "0.25"], ["1.01", "nan"]),
    (A.threads, ["0", "1", str(A.MAX_THREADS)], ["-1", str(A.MAX_THREADS + 1), "100000"]),
    (A.dpi, ["10", "300", "1200"], ["9", "1", "10000"]),
    (A.port, ["1", "8501", "65535"], ["0", "65536", "70000", "-1"]),
    (A.address, ["127.0.0.1", "0.0.0.0", "::1", "localhost", "my-host.example.org"],
     ["999.1.1.1", "1.2.3", "", "bad_host", "-lead.example", "a..b"]),
    (A.nonempty_str, ["x"], ["", "  "]),
    (A.device, ["cpu"], ["bogus", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"])),
])
def test_types_accept_the_meaningful_and_refuse_the_rest(kind, good, bad):
    for g in good:
        kind(g)
    for b in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(b)


def test_path_types(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    assert A.existing_file(str(f)) == str(f) and A.existing_dir(str(tmp_path)) == str(tmp_path)
    cases = [(A.existing_file, str(tmp_path), "is a directory"), (A.existing_file, str(tmp_path / "no"), "no such file"),
             (A.existing_file, "", "empty"), (A.existing_dir, str(f), "is a file"),
             (A.existing_dir, str(tmp_path / "no"), "no such folder"),
             (A.output_dir, str(f), "not a folder"), (A.output_dir, "/proc/x", "/proc"), (A.output_dir, "", "empty"),
             (A.output_dir, str(f / "sub"), "is a file"),
             (A.output_file, str(tmp_path), "is a directory"), (A.output_file, "/sys/x.pt", "/sys"),
             (A.output_file, str(tmp_path / "no" / "x.pt"), "does not exist"), (A.output_file, "", "empty")]
    for kind, value, words in cases:
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            kind(value)
    assert A.output_dir(str(tmp_path / "new" / "deeper")) and A.output_file(str(tmp_path / "x.pt"))
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        with pytest.raises(argparse.ArgumentTypeError, match="not writable"):
            A.output_dir(str(ro / "out"))


def test_parse_errors_and_repeats_are_one_line(capsys):
    p = A.Parser(prog="gatta-viz x")
    p.add_argument("--sigmas", type=A.nonnegative_float, nargs="+", action=A.UniqueList)
    assert p.parse_args(["--sigmas", "0", "0.1"]).sigmas == [0.0, 0.1]
    for argv, words in ((["--sigmas", "0", "0.10", "0.1"], "0.1 given more than once"),
                        (["--sigmas", "nan"], "must be a finite number"), (["--bogus"], "unrecognized arguments")):
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and words in err
        assert err.startswith("gatta-viz x: error: ") and err.rstrip().endswith("(see gatta-viz x --help)")


def test_strict_json_writes_null_for_nan_and_inf():
    obj = {"a": float("nan"), "b": [1, float("inf"), np.float32(-np.inf), np.float64(0.5)], "c": (np.int64(3), True),
           "d": torch.tensor(float("nan")), "e": torch.tensor(2.5), "f": None, "g": "nan"}
    want = {"a": None, "b": [1, None, None, 0.5], "c": [3, True], "d": None, "e": 2.5, "f": None, "g": "nan"}
    assert strict_json(obj) == want
    text = dumps_json(obj)
    assert "NaN" not in text and "Infinity" not in text and json.loads(text) == want
    assert math.isnan(obj["a"])  # the input is not modified


def test_atomic_writes_leave_nothing_behind_on_failure(tmp_path):
    path = tmp_path / "out.json"
    write_json(str(path), {"x": float("nan")})
    assert json.loads(path.read_text()) == {"x": None}
    mode = os.stat(path).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # the permissions open() would give, not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert json.loads(path.read_text()) == {"x": None} and os.listdir(tmp_path) == ["out.json"]  # old file intact
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(str(tmp_path / "fig.png")) as tmp:
            assert tmp.endswith(".png") and os.path.dirname(tmp) == str(tmp_path)
            open(tmp, "wb").write(b"x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["out.json"]
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError):
        write_json(str(tmp_path / "adir"), {})
    assert sorted(os.listdir(tmp_path)) == ["adir", "out.json"] and not os.listdir(tmp_path / "adir")


def test_a_checkpoint_write_that_fails_leaves_no_temp_file(tmp_path, monkeypatch):
    from gatta_viz.models import checkpoint

    def boom(obj, path):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.write_atomically({"a": 1}, str(tmp_path / "x.pt"))
    assert os.listdir(tmp_path) == []
    with pytest.raises(IsADirectoryError):
        checkpoint.write_atomically({"a": 1}, str(tmp_path))


def test_validate_checkpoint_names_every_problem_at_once(tmp_path):
    import gatta_viz as gv
    from gatta_viz.models.checkpoint import validate_checkpoint

    good = torch.load(gv.bundled_path("fmnist-gatta-toy"), weights_only=True)
    validate_checkpoint(good, "good.pt")  # a bundled checkpoint is valid
    bad = dict(good, kwargs=["d", 16], meta="somewhere", classes="abc",
               preprocess={"size": [28], "channels": 1, "mean": [float("nan")], "std": [0.0]},
               state_dict={**good["state_dict"]}, class_queries=torch.full((10, 16), float("inf")))
    first = next(k for k, v in bad["state_dict"].items() if v.is_floating_point())
    bad["state_dict"][first] = torch.full_like(bad["state_dict"][first], float("nan"))
    with pytest.raises(ValueError) as e:
        validate_checkpoint(bad, "bad.pt")
    msg = str(e.value)
    for words in ("'kwargs' must be a dict", "'meta' must be a dict", "'classes' must be a non-empty list",
                  "preprocess 'size'", "preprocess 'mean' must be a list of finite numbers", "'std' must be positive",
                  f"non-finite weights (NaN or inf) in 1 tensor(s): {first}", "'class_queries' must be a finite tensor"):
        assert words in msg, (words, msg)
    assert msg.startswith("checkpoint bad.pt is invalid: ") and "\n" not in msg
    no_pre = {k: v for k, v in good.items() if k != "preprocess"}
    with pytest.raises(ValueError, match="lacks 'preprocess'"):
        validate_checkpoint(no_pre, "x.pt")
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="non-finite weights"):  # every loader refuses it
        gv.load_model(str(tmp_path / "bad.pt"))
