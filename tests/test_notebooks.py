"""The notebooks: committed with their outputs, re-executed offline, and their numbers hold up (run time: benchmarks/notebooks.py).

Each notebook ends with a cell printing one line ``KEY NUMBERS {...json...}``; the checks of those numbers (ranges,
counts, consistency between them) live here, not in the notebooks' visible cells. Two kinds of test:

- ``test_stored_notebook``: the committed file (no execution) is small, has its outputs (figures, answers, key
  numbers that pass the checks) and was executed with the bundled models that ship now (same alphas);
- ``test_notebook_executes``: a fresh run in a scratch directory has no error, stays under 3 minutes, shows and
  saves its figures, and its key numbers pass the checks.

To refresh the stored outputs after changing a notebook or a bundled model::

    cd notebooks && OMP_NUM_THREADS=1 ../.venv/bin/jupyter execute --inplace 0*.ipynb && rm -r notebook_figures
"""
import json
import math
import os
import re

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

NB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "notebooks")
MIN_FIGURES = {"01_quickstart.ipynb": 3, "02_layer_contributions.ipynb": 5, "03_captum_and_faithfulness.ipynb": 6,
               "04_two_garments_and_a_cue.ipynb": 7, "05_garments_in_clutter.ipynb": 9}
MAX_BYTES = 1_500_000
CELL_TIMEOUT = 1800  # seconds: a hang guard only; how long the notebooks take is measured by benchmarks/notebooks.py
KEY_PREFIX = "KEY NUMBERS "


# ------------------------------------------------------------------------------------------------ reading outputs
def _outputs(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            yield from cell.get("outputs", [])


def _errors(nb):
    return [f"{o.get('ename')}: {o.get('evalue')}" for o in _outputs(nb) if o.get("output_type") == "error"]


def _n_images(nb):
    return sum("image/png" in o.get("data", {}) for o in _outputs(nb))


def _key_numbers(nb):
    lines = [line[len(KEY_PREFIX):] for o in _outputs(nb) if o.get("output_type") == "stream"
             for line in o.get("text", "").splitlines() if line.startswith(KEY_PREFIX)]
    assert len(lines) == 1, f"expected one '{KEY_PREFIX}' line, found {len(lines)}"
    return json.loads(lines[0])


def _sections(nb):
    """(heading, cells) for every '## ' section."""
    out = []
    for cell in nb.cells:
        first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        if cell.cell_type == "markdown" and first.startswith("## "):
            out.append((first[3:].strip(), []))
        elif out:
            out[-1][1].append(cell)
    return out


def _is_answer(o):
    return str(o.get("data", {}).get("text/markdown", "")).startswith("**Answer.**")


# ------------------------------------------------------------------------------------------------ structure
def check_structure(nb, name):
    """Every question section has code, a figure or a table, and an answer; no assertion in a visible cell."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not re.search(r"\bassert\b", cell.source), f"{name}: an assertion in a visible cell:\n{cell.source[:200]}"
    questions = [(h, cells) for h, cells in _sections(nb) if h.endswith("?")]
    assert len(questions) >= 3, f"{name}: only {len(questions)} question sections"
    for heading, cells in questions:
        outs = [o for c in cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert any(c.cell_type == "code" for c in cells), f"{name}: section {heading!r} has no code"
        assert any("image/png" in o.get("data", {}) or "text/html" in o.get("data", {}) for o in outs), \
            f"{name}: section {heading!r} shows no figure or table"
        answers = [o for o in outs if _is_answer(o)]
        assert answers, f"{name}: section {heading!r} has no answer"
        assert all(len(o["data"]["text/markdown"]) > 60 for o in answers), f"{name}: section {heading!r}: answer too short"
        assert all(str(o["data"].get("text/plain", "")).startswith("Answer. ") for o in answers), \
            f"{name}: section {heading!r}: answer has no plain-text form"


# ------------------------------------------------------------------------------------------------ key numbers
def _close(a, b, tol):
    return abs(float(a) - float(b)) <= tol


def _bundled_alphas(name):
    import gatta_viz as gv

    return gv.load_model(name).model.alphas


def _check_alphas(stored, bundled, what):
    assert set(stored) == set(bundled), f"{what}: layers {sorted(stored)} vs bundled {sorted(bundled)}"
    stale = {n: (stored[n], bundled[n]) for n in bundled if not _close(stored[n], bundled[n], 1e-6)}
    assert not stale, (f"{what}: outputs were made with other weights (stored vs bundled alpha: {stale}); "
                       "re-execute the notebooks (see this file's docstring)")


def check_01(k):
    assert k["model"] == "fmnist_gatta_resnet"
    _check_alphas(k["alphas"], _bundled_alphas("fmnist-gatta-resnet"), "01 quickstart")
    n = k["n_images"]
    assert n == 8
    assert 0 <= k["passes_agree"] <= n and 0 <= k["correct_pass1"] <= n and 0 <= k["correct_pass2"] <= n
    assert abs(k["correct_pass1"] - k["correct_pass2"]) <= n - k["passes_agree"]  # only changed images can differ
    assert 0.1 <= k["mean_p_pass1"] <= 1 and 0.1 <= k["mean_p_pass2"] <= 1
    assert k["model_is_pass2"] is True
    # negating a layer's keys and alpha: same network, raw map negated, gain map unchanged
    assert k["flip_logit_diff"] <= 1e-5 and k["flip_gain_diff"] <= 1e-6 and k["flip_raw_sum"] <= 1e-5
    raw, gain, a = np.array(k["raw"]), np.array(k["gain"]), k["alphas"][k["flip_layer"]]
    assert raw.shape == gain.shape == (10,)
    assert np.allclose(gain, 1 + a * raw, atol=1e-5)
    assert k["top_raw"] == int(raw.argmax()) and k["top_gain"] == int(gain.argmax())
    if a < 0:
        assert k["top_gain"] == int(raw.argmin())
    # garment vs background: the listed layers are exactly those where the garment's mean gain is higher
    assert set(k["kinds"]) == set(k["alphas"])
    assert set(k["garment"]) == set(k["background"]) == {n_ for n_, kind in k["kinds"].items() if kind == "conv"}
    assert sorted(k["favoured_layers"]) == sorted(n_ for n_ in k["garment"] if k["garment"][n_] > k["background"][n_])
    assert all(abs(v) < 5 for v in list(k["garment"].values()) + list(k["background"].values()))
    return k


def check_02(k):
    assert k["model"] == "fmnist_gatta_resnet"
    _check_alphas(k["alphas"], _bundled_alphas("fmnist-gatta-resnet"), "02 layer contributions")
    _check_alphas(k["toy_alphas"], _bundled_alphas("fmnist-gatta-toy"), "02 layer contributions (toy)")
    n, layers = k["n"], k["layers"]
    assert n == 1000 and layers == list(k["alphas"])
    assert 85 < k["acc_pass2"] <= 100 and 0 <= k["acc_pass1"] <= 100  # the bundled ResNet is at about 94%
    assert k["changed"] == k["fixed"] + k["broken"] + k["swapped"]
    assert _close((k["acc_pass2"] - k["acc_pass1"]) * n / 100, k["fixed"] - k["broken"], 1e-6)
    assert k["gallery"] == min(4, k["fixed"]) + min(4, k["broken"])
    assert 0 < k["sign_test_p"] <= 1
    if k["fixed"] == k["broken"]:
        assert k["sign_test_p"] == 1
    # ablation
    assert set(k["ablation"]) == set(layers)
    na = k["ablation_images"]
    assert 0 < na <= n and 0 <= k["ablation_accuracy_full"] <= 100
    for name, r in k["ablation"].items():
        assert -1 <= r["dp_pred"] <= 1 and -1 <= r["dp_true"] <= 1 and r["se"] >= 0, name
        assert 0 <= r["accuracy"] <= 100 and 0 <= r["changed"] <= na, name
        # a changed prediction moves accuracy by at most 1/na each
        assert abs(r["accuracy"] - k["ablation_accuracy_full"]) <= 100 * r["changed"] / na + 1e-9, name
    assert k["ablation_check"] < 1e-9  # the notebook's ablation equals gv.ablation_scores (sign flipped)
    # per class
    pc = k["per_class"]
    assert sum(pc["images"]) == n and sum(pc["fixed"]) == k["fixed"] and sum(pc["broken"]) == k["broken"]
    for col, total in (("acc pass 1 (%)", k["acc_pass1"]), ("acc pass 2 (%)", k["acc_pass2"])):
        assert _close(sum(c * a for c, a in zip(pc["images"], pc[col])) / n, total, 1e-6), col
    # class-unit gains
    assert 0 <= k["true_top_gain"] <= k["true_top2_gain"] <= 1
    assert 0 <= k["share_gains_below_1"] <= 1
    a_cls = k["alphas"][k["class_layer"]]
    if a_cls < 0:  # the largest gain is the lowest raw agreement (ties aside)
        assert abs(k["true_extreme_raw"] - k["true_top_gain"]) <= 0.002
    # the images pass 2 changed, undone by one layer
    assert all(0 <= v <= k["changed"] for v in k["undone_by"].values())
    assert 0 <= k["undone_by_none"] <= k["changed"]
    assert k["changed"] == 0 or max(k["undone_by"].values()) + k["undone_by_none"] >= 1
    # q_avg embedding
    e = k["embedding"]
    assert 0 < sum(e["explained"]) <= 1 + 1e-6 and e["explained"][0] >= e["explained"][1]
    assert 0 <= e["footwear"] <= 1 and 0 <= e["class"] <= 1
    # the toy
    toy = k["toy"]
    assert 0 <= toy["acc pass 1 (%)"] <= 100 and 0 <= toy["acc pass 2 (%)"] <= 100
    assert toy["changed"] >= toy["fixed"] + toy["broken"]
    assert _close((toy["acc pass 2 (%)"] - toy["acc pass 1 (%)"]) * n / 100, toy["fixed"] - toy["broken"], 1e-6)
    s = k["store"]  # the maps were written once into a store and read back from it
    assert s["n"] == n and s["complete"] is True and s["format"] == "gatta_viz.maps/1" and s["chunks"] == -(-n // s["chunk"])
    assert k["table_check"] < 1e-3  # the table's per-image scalars average to the chunk-wise sums over the maps (float16 maps)
    convs = [c for c in layers if c != k["class_layer"]]
    assert list(k["class_means"]) == convs
    for c, v in k["class_means"].items():
        assert v["counts"] == pc["images"], c  # images per class: the same in the class means and the per-class table
        assert -1 - 1e-9 <= v["pairwise_r_min"] <= v["pairwise_r"] <= 1 + 1e-9, c
        assert len(v["r_with_image"]) == len(v["mean_by_class"]) == 10 and all(-1 - 1e-9 <= r <= 1 + 1e-9 for r in v["r_with_image"]), c
    assert k["class_mean_check"] < 1e-5  # the count-weighted class means average to the table's mean_gain (measured 3.5e-08)
    return k


def _verdict(r, kind):
    d, se = r[f"{kind}_minus_random"], r[f"{kind}_minus_random_se"]
    good = d < -2 * se if kind == "deletion" else d > 2 * se
    bad = d > 2 * se if kind == "deletion" else d < -2 * se
    return "better than random" if good else "worse than random" if bad else "indistinguishable from random"


def check_03(k):
    assert k["model"] == "fmnist_gatta_resnet"
    _check_alphas(k["alphas"], _bundled_alphas("fmnist-gatta-resnet"), "03 captum and faithfulness")
    for r in [k["rho_image0"]] + list(k["rho"].values()):
        vals = r.values() if isinstance(r, dict) else [r]
        assert all(math.isnan(v) or -1 <= v <= 1 for v in vals)
    assert all(v >= 0 for r in k["rho_se"].values() for v in r.values() if not math.isnan(v))
    assert set(k["rho"]) == set(k["rho_image0"])
    for proto in ("grey", "road"):
        rep = k[proto]
        assert {"gain", "gradcam", "random"} <= set(rep), proto
        rnd = rep["random"]
        for m, r in rep.items():
            for kind in ("deletion", "insertion"):
                assert 0 <= r[f"{kind}_auc"] <= 1 and r[f"{kind}_auc_se"] >= 0, (proto, m)
                if m != "random":  # mean of paired differences = difference of means
                    assert _close(r[f"{kind}_minus_random"], r[f"{kind}_auc"] - rnd[f"{kind}_auc"], 1e-9), (proto, m)
                    assert k["verdicts"][f"{proto}:{m}:{kind}"] == _verdict(r, kind), (proto, m, kind)
    assert any(m.startswith("gain:") for m in k["road"])
    assert k["explain_shape"] == [6, 1, 28, 28]
    lo, hi = k["explain_range"]
    assert -1 - 1e-6 <= lo <= hi <= 1 + 1e-6  # a mean of maps each scaled to max |value| = 1
    return k


SCENE_BINS = ("none", "low", "mid", "high")


def _fingerprint(name):
    """Sum of a bundled model's floating parameters and buffers (a plain model has no alphas to compare)."""
    import torch

    import gatta_viz as gv

    sd = gv.load_model(name).model.state_dict()
    return float(sum(v.double().sum() for v in sd.values() if torch.is_floating_point(v)))


def _versus(d, ref):
    if d["mean"] > ref + 2 * d["se"]:
        return "above"
    if d["mean"] < ref - 2 * d["se"]:
        return "below"
    return "indistinguishable from"


def _rate_block(block, counts, per_scene, what):
    """A by-bin block of rates (mean, se, n): in [0, 1], n = per_scene x scenes of the bin, bins average to 'all'."""
    for b in list(SCENE_BINS) + ["all"] + (["none+low"] if "none+low" in block else []):
        d = block[b]
        want = sum(counts.values()) if b == "all" else counts["none"] + counts["low"] if b == "none+low" else counts[b]
        assert d["n"] == per_scene * want, (what, b, d["n"], want)
        if d["n"]:
            assert 0 <= d["mean"] <= 1, (what, b)
        if d["n"] > 1:
            assert d["se"] >= 0, (what, b)
    total = sum(block[b]["n"] for b in SCENE_BINS)
    weighted = sum(block[b]["mean"] * block[b]["n"] for b in SCENE_BINS if block[b]["n"]) / total
    assert _close(weighted, block["all"]["mean"], 1e-9), (what, weighted, block["all"]["mean"])
    if "none+low" in block and block["none+low"]["n"]:
        nl = sum(block[b]["mean"] * block[b]["n"] for b in ("none", "low") if block[b]["n"]) / block["none+low"]["n"]
        assert _close(nl, block["none+low"]["mean"], 1e-9), what


def _check_baseline(stored, name, what):
    """The stored fingerprint of a baseline's weights is that of the bundled ``name`` (baselines have no alphas)."""
    fp = _fingerprint(name)
    assert _close(stored, fp, 1e-9 * max(1.0, abs(fp))), (
        f"{what}: outputs were made with another baseline; re-execute the notebooks (see this file's docstring)")


def check_04(k):
    assert k["model"] == "fmnist_pairs_gatta_resnet" and k["baseline"] == "fmnist_pairs_resnet"
    _check_alphas(k["alphas"], _bundled_alphas("fmnist-pairs-gatta-resnet"), "04 two garments and a cue")
    _check_baseline(k["baseline_fingerprint"], "fmnist-pairs-resnet", "04 two garments and a cue")
    n, counts = k["n"], k["bins"]
    assert n == 1000 and k["cue_n"] == n
    assert set(counts) == set(SCENE_BINS) and k["cue_bins"] == counts
    assert all(v >= 0 for v in counts.values()) and sum(counts.values()) == n
    # 1. both-items accuracy: by bin averages to the overall; paired differences are differences of accuracies
    acc = k["accuracy"]
    assert set(acc) == {"GAttA pass 1", "GAttA pass 2", "baseline"}
    for name, block in acc.items():
        _rate_block(block, counts, 1, name)
    for key, (a, b) in (("gatta_minus_baseline", ("GAttA pass 2", "baseline")),
                        ("pass2_minus_pass1", ("GAttA pass 2", "GAttA pass 1"))):
        for g in list(SCENE_BINS) + ["all"]:
            assert _close(k[key][g]["mean"], acc[a][g]["mean"] - acc[b][g]["mean"], 1e-9), (key, g)
            assert k[key][g]["n"] == acc[a][g]["n"] and -1 <= k[key][g]["mean"] <= 1
    acc2 = acc["GAttA pass 2"]["all"]["mean"]
    # item recall over 2n items = (2 x scenes with both + 1 x scenes with exactly one) / 2n
    assert 0 <= k["one_item_pass2"] <= 1 - acc2 + 1e-12
    assert _close(k["recall_pass2"], acc2 + k["one_item_pass2"] / 2, 1e-9)
    # the same scenes through measure_cues (other batches): the same pass-2 accuracy, to a near-tie or two
    _rate_block(k["pass2_on_cue_scenes"], counts, 1, "pass 2 in measure_cues")
    assert abs(k["pass2_on_cue_scenes"]["all"]["mean"] - acc2) <= 2 / n
    # 2. uncued attention
    convs = [name for name, kind in k["kinds"].items() if kind == "conv"]
    assert set(k["uncued"]) == {"gain"} | {f"gain:{c}" for c in convs}
    for mp, r in k["uncued"].items():
        # a map with no positive energy on either item picks neither: those scenes are left out of picks and split;
        # a map with no positive value at all (a subset of them) also out of the energy share
        picking = n - round(r["no_positive_energy"]["mean"] * n)
        for key, d in r.items():
            assert 0 <= d["mean"] <= 1 and d["se"] >= 0, (mp, key)
            if key in ("pointing_hit_either", "no_positive_energy"):
                assert d["n"] == n, (mp, key)
            elif key == "share_items_total":
                assert picking <= d["n"] <= n, (mp, key, d["n"], picking)
            else:
                assert d["n"] == picking, (mp, key, d["n"], picking)
    assert 0 < k["items_area"]["mean"] < 1
    # 3. cue success: 2 cases per scene, bins average to the overall, rates in [0, 1]
    cs = k["cue_success"]
    assert set(cs) == {"gain", "gradcam"} | {f"gain:{c}" for c in convs}
    for mp, r in cs.items():
        _rate_block(r["success"], counts, 2, f"{mp} success")
        if mp != "gradcam":
            _rate_block(r["random"], counts, 2, f"{mp} random query")
            assert -1 <= r["shift"]["mean"] <= 1 and 0 < r["shift"]["n"] <= 2 * n
    # per layer: mean alpha x agreement = alpha x mean agreement, so the cued item is boosted more exactly when
    # the query agrees more with it (alpha > 0), or less (alpha < 0)
    assert set(k["layer_counts"]) == set(convs)
    for layer, c in k["layer_counts"].items():
        assert 0 < c["cases"] <= 2 * n and 0 <= c["ties"] <= c["cases"]
        assert 0 <= c["query_matches"] <= c["cases"] and 0 <= c["boosts_cued"] <= c["cases"]
        a = k["alphas"][layer]
        expected = c["query_matches"] if a > 0 else c["cases"] - c["query_matches"] - c["ties"]
        assert abs(c["boosts_cued"] - expected) <= 2, (layer, a, c)
    assert k["hand_vs_measure_max_diff"] <= 1e-5  # model.trace(x, query=...) by hand = measure_cues
    # 4. the output
    cc = k["cued_class"]
    assert all(d["n"] == 2 * n for d in cc.values())
    assert -1 <= cc["prob_change"]["mean"] <= 1 and -9 <= cc["rank_change"]["mean"] <= 9
    assert 0 <= cc["becomes_top1"]["mean"] <= 1 and 0 <= cc["was_top1"]["mean"] <= 1
    if k["fc_layer"]:
        f = k["fc_gain"]
        assert _close(f["own_uncued"], f["other_uncued"], 1e-6)  # pooled over both items: the same units
        assert _close(f["own_change"]["mean"], f["own_cued"] - f["own_uncued"], 1e-5)
        assert _close(f["own_minus_other_change"]["mean"], (f["own_cued"] - f["own_uncued"]) - (f["other_cued"] - f["other_uncued"]), 1e-5)
        assert 0 <= f["own_suppressed_cued"] <= 1
        if k["alphas"][k["fc_layer"]] == 0:
            assert _close(f["own_cued"], 1, 1e-6)
    _rate_block(k["readout"], counts, 1, "read-out by cueing")
    for g in list(SCENE_BINS) + ["all", "none+low"]:
        assert _close(k["readout_minus_pass2"][g]["mean"], k["readout"][g]["mean"] - k["pass2_on_cue_scenes"][g]["mean"], 1e-9), g
    # 5. controls
    ctl = k["controls"]
    assert 0 <= ctl["absent_enters_top2"]["mean"] <= 1 and 0 <= ctl["absent_pair_still_top2"]["mean"] <= 1
    # in one scene the absent class in the top 2 and the true pair as the top 2 exclude each other
    assert ctl["absent_enters_top2"]["mean"] + ctl["absent_pair_still_top2"]["mean"] <= 1 + 1e-9
    assert -1 <= ctl["absent_prob_change"]["mean"] <= 1 and ctl["absent_prob_change"]["n"] == n
    assert -1 <= ctl["random_prob_change"]["mean"] <= 1 and ctl["random_prob_change"]["n"] == 2 * n
    assert 0 <= k["absent_top2_uncued"]["mean"] <= 1
    assert _close(k["cue_vs_random_prob"]["mean"], cc["prob_change"]["mean"] - ctl["random_prob_change"]["mean"], 1e-6)
    pst = k["pair_still_top2"]
    assert _close(pst["uncued"]["mean"], k["pass2_on_cue_scenes"]["all"]["mean"], 1e-12)
    assert _close(pst["absent"]["mean"], ctl["absent_pair_still_top2"]["mean"], 1e-12)
    assert pst["cued"]["n"] == pst["random"]["n"] == 2 * n and all(0 <= d["mean"] <= 1 for d in pst.values())
    # the verdicts the answers were written from
    v = k["verdicts"]
    assert v["gatta_vs_baseline"] == _versus(k["gatta_minus_baseline"]["all"], 0)
    assert v["pass2_vs_pass1"] == _versus(k["pass2_minus_pass1"]["all"], 0)
    assert v["cue_success"] == _versus(cs["gain"]["success"]["all"], 0.5)
    assert v["readout_vs_pass2"] == _versus(k["readout_minus_pass2"]["all"], 0)
    for crit in ("picks_higher_scoring", "picks_bigger", "picks_brighter"):
        assert v[f"uncued_{crit}"] == _versus(k["uncued"]["gain"][crit], 0.5), crit
    assert k["cue_minus_random_verdict"] == _versus(k["cue_vs_random_prob"], 0)
    assert len(k["examples"]) == 4 and all(0 <= o <= 0.1 for o in k["example_overlaps"])
    assert isinstance(k["explain_cue"], str) and k["cue_seconds"] > 0
    # the hand-made default-map success (model.trace by hand, same batches) = measure_cues', to a near-tie or two
    hs = k["hand_success"]
    assert all(0 <= v <= 1 for v in hs.values())
    assert abs(hs["mean"] - cs["gain"]["success"]["all"]["mean"]) <= 2 / (2 * n)
    _check_04_steering(k, counts, convs)
    return k


def _check_04_steering(k, counts, convs):
    """Section 3b and the steering rows of 4 and 5: the second cue definition, measured on the same scenes."""
    import torch

    import gatta_viz as gv
    from gatta_viz.models.checkpoint import steering_queries

    n, st, cs = k["n"], k["steering"], k["cue_success"]
    lm = gv.load_model("fmnist-pairs-gatta-resnet")
    info = lm.meta["class_queries"]
    # the sign: the one with the higher training-scene success (ties: +1, as calibrate_cue_sign), as stored
    assert st["sign"] in (1, -1) and st["sign"] == info["sign"]
    assert 0 <= st["success_plus"] <= 1 and 0 <= st["success_minus"] <= 1 and st["calibration_scenes"] > 0
    assert (st["success_plus"], st["success_minus"]) == (info["success_plus"], info["success_minus"])
    assert st["sign"] == (1 if st["success_plus"] >= st["success_minus"] else -1)
    assert st["default_definition"] == lm.cue_definition == "steering" and st["default_cue_max_diff"] <= 1e-6
    # the shared part, recomputed from the bundled class means; the own parts sum to zero, so
    # mean |m_c|^2 = |m_bar|^2 + mean |m_c - m_bar|^2 exactly
    q = lm.class_queries.double()
    m_bar, own = q.mean(0), (q - q.mean(0)).norm(dim=1)
    g = st["geometry"]
    assert _close(g["shared_norm"], m_bar.norm(), 1e-9) and _close(g["own_norm_mean"], own.mean(), 1e-9)
    assert _close(g["shared_to_own"], g["shared_norm"] / g["own_norm_mean"], 1e-9)
    assert _close(g["mean_norm_sq"], g["shared_norm"] ** 2 + g["own_norm_sq_mean"], 1e-9)
    assert _close(g["shared_energy_fraction"], g["shared_norm"] ** 2 / g["mean_norm_sq"], 1e-9)
    assert -1 <= g["mean_pairwise_cosine"] <= 1 and -1 <= g["cosine_with_shared"] <= 1
    # the steering table keeps each class mean's norm, so the random query (same seed, norm of the cue) is the same
    sq = steering_queries(lm.class_queries, st["sign"])
    assert torch.allclose(sq.norm(dim=1), lm.class_queries.norm(dim=1), rtol=1e-5)
    # cue success: by bin, rates in [0, 1], bins weighted by counts give the overall
    scs = st["cue_success"]
    assert set(scs) == set(cs)
    for mp, r in scs.items():
        _rate_block(r["success"], counts, 2, f"steering {mp} success")
        if mp != "gradcam":
            _rate_block(r["random"], counts, 2, f"steering {mp} random query")
            assert abs(r["random"]["all"]["mean"] - cs[mp]["random"]["all"]["mean"]) <= 4 / (2 * n), mp
            assert -1 <= r["shift"]["mean"] <= 1
    for b in list(SCENE_BINS) + ["all", "none+low"]:  # Grad-CAM does not see the query
        assert _close(scs["gradcam"]["success"][b]["mean"], cs["gradcam"]["success"][b]["mean"], 1e-12), b
        d = st["steer_minus_mean"][b]
        assert d["n"] == scs["gain"]["success"][b]["n"]
        assert _close(d["mean"], scs["gain"]["success"][b]["mean"] - cs["gain"]["success"][b]["mean"], 1e-9), b
    # outcomes per scene: both / one / neither cue succeeds; (2 both + one) / 2 is the success rate
    for name, succ in (("mean", cs["gain"]["success"]["all"]), ("steering", scs["gain"]["success"]["all"])):
        o = st["outcomes"][name]
        assert all(0 <= v <= 1 for v in o.values()) and _close(sum(o.values()), 1, 1e-9), name
        assert _close(o["both"] + o["one"] / 2, succ["mean"], 1e-9), name
    # by hand (same batches): the same success and the same cued probabilities as measure_cues
    hs = k["hand_success"]
    assert abs(hs["steering"] - scs["gain"]["success"]["all"]["mean"]) <= 2 / (2 * n)
    assert st["hand_max_diff"] <= 1e-5
    # per layer: the alpha-sign rule under both signs; agreement is linear in the query, so the opposite sign's
    # "query agrees more" cases are the others (ties aside)
    for key in ("layer_counts", "layer_counts_opposite"):
        assert set(st[key]) == set(convs)
        for layer, c in st[key].items():
            assert 0 < c["cases"] <= 2 * n and 0 <= c["ties"] <= c["cases"]
            assert 0 <= c["query_matches"] <= c["cases"] and 0 <= c["boosts_cued"] <= c["cases"]
            a = k["alphas"][layer]
            expected = c["query_matches"] if a > 0 else c["cases"] - c["query_matches"] - c["ties"]
            assert abs(c["boosts_cued"] - expected) <= 2, (key, layer, a, c)
    for layer in convs:
        c, o = st["layer_counts"][layer], st["layer_counts_opposite"][layer]
        assert c["cases"] == o["cases"]
        assert abs(o["query_matches"] - (c["cases"] - c["query_matches"] - c["ties"])) <= 2, layer
    # 4. the output under the steering cue
    cc, mc = st["cued_class"], k["cued_class"]
    assert all(d["n"] == 2 * n for d in cc.values())
    assert -1 <= cc["prob_change"]["mean"] <= 1 and -9 <= cc["rank_change"]["mean"] <= 9
    assert 0 <= cc["becomes_top1"]["mean"] <= 1 and _close(cc["was_top1"]["mean"], mc["was_top1"]["mean"], 1e-12)
    assert _close(st["prob_steer_minus_mean"]["mean"], cc["prob_change"]["mean"] - mc["prob_change"]["mean"], 1e-6)
    if k["fc_layer"]:
        f, fm = st["fc_gain"], k["fc_gain"]
        assert _close(f["own_uncued"], fm["own_uncued"], 1e-6) and _close(f["own_uncued"], f["other_uncued"], 1e-6)
        assert _close(f["own_change"]["mean"], f["own_cued"] - f["own_uncued"], 1e-5)
        assert 0 <= f["own_suppressed_cued"] <= 1
    _rate_block(st["readout"], counts, 1, "read-out by steering cues")
    for g in list(SCENE_BINS) + ["all", "none+low"]:
        assert _close(st["pass2_on_cue_scenes"][g]["mean"], k["pass2_on_cue_scenes"][g]["mean"], 1e-12), g
        assert _close(st["readout_minus_pass2"][g]["mean"], st["readout"][g]["mean"] - st["pass2_on_cue_scenes"][g]["mean"], 1e-9), g
    assert _close(st["readout_steer_minus_mean"]["mean"], st["readout"]["all"]["mean"] - k["readout"]["all"]["mean"], 1e-9)
    # 5. controls
    ctl = st["controls"]
    assert ctl["absent_enters_top2"]["mean"] + ctl["absent_pair_still_top2"]["mean"] <= 1 + 1e-9
    assert -1 <= ctl["absent_prob_change"]["mean"] <= 1 and ctl["absent_prob_change"]["n"] == n
    assert _close(ctl["random_prob_change"]["mean"], k["controls"]["random_prob_change"]["mean"], 1e-3)
    assert _close(st["steer_vs_random_prob"]["mean"], cc["prob_change"]["mean"] - ctl["random_prob_change"]["mean"], 1e-6)
    assert 0 <= st["pair_still_top2_cued"]["mean"] <= 1 and st["pair_still_top2_cued"]["n"] == 2 * n
    # the verdicts the answers were written from
    v = st["verdicts"]
    assert v["cue_success"] == _versus(scs["gain"]["success"]["all"], 0.5)
    assert v["steer_vs_mean"] == _versus(st["steer_minus_mean"]["all"], 0)
    assert v["readout_vs_pass2"] == _versus(st["readout_minus_pass2"]["all"], 0)
    assert v["prob_steer_vs_mean"] == _versus(st["prob_steer_minus_mean"], 0)
    assert v["vs_random"] == _versus(st["steer_vs_random_prob"], 0)
    assert st["examples"] == k["examples"] and st["seconds"] > 0


def _mean_block(d, n=None):
    """A {"mean", "se", "n"} block: finite mean, se >= 0, and the expected count."""
    assert math.isfinite(d["mean"]) and d["se"] >= 0, d
    if n is not None:
        assert d["n"] == n, (d["n"], n)


def _check_05_localization(k, convs):
    """Sections 2 and 3: ROC-AUC, top-k share, average precision, pointing and energy, paired differences, the fixed
    rank-based rule (and the first, energy-based one), fitted priors, per layer and photo."""
    n, loc = k["n"], k["localization"]
    assert loc["n"] == n and loc["gradcam_layer"] == convs[-1]
    share = loc["mask_share"]
    assert 0 < share["mean"] < 1 and share["se"] >= 0
    ms = loc["methods"]
    refs = {"random", "centre", "mean_mask"}
    want = {"gain", "total_gain", "gradcam"} | refs | {f"gain:{c}" for c in convs}
    assert want <= set(ms), sorted(ms)
    assert loc["centre_sigma"] > 0
    for m, r in list(ms.items()) + [("baseline gradcam", k["baseline_gradcam"])]:
        for key in ("auc", "topk", "ap", "energy", "pointing"):
            assert 0 <= r[key] <= 1 and r[f"{key}_se"] >= 0, (m, key)
        assert r["energy_n"] == n and r["auc_n"] == n and 0 <= r["n_no_positive"] <= n, m
        assert 0 <= r["share_positive"] <= 1, m
    assert k["baseline_gradcam"]["auc_n"] == n
    # a uniform random map: ROC-AUC 0.5; top-k share, energy and AP about the mask's share of the image
    rnd = ms["random"]
    assert abs(rnd["auc"] - 0.5) <= max(0.01, 3 * rnd["auc_se"]), rnd["auc"]
    for key in ("topk", "energy", "ap"):
        assert abs(rnd[key] - share["mean"]) <= max(0.015, 3 * rnd[f"{key}_se"]), (key, rnd[key], share["mean"])
    assert rnd["n_no_positive"] == 0 and ms["mean_mask"]["n_no_positive"] == 0
    # paired differences over the same images = differences of the means
    for m, r in ms.items():
        for key in ("auc", "topk", "energy"):
            assert set(r["minus"][key]) == (refs | {"gradcam"}) - {m}, (m, key)
            for ref, d in r["minus"][key].items():
                assert d["n"] == n and d["se"] >= 0, (m, key, ref)
                assert _close(d["mean"], r[key] - ms[ref][key], 1e-9), (m, key, ref)
    # the rank-based rule fixed in docs/RESULTS.md 9, recomputed from the paired differences
    g, rule = ms["gain"]["minus"], loc["rule"]
    lows = {f"{key}_minus_{ref}": g[key][ref]["mean"] - 1.96 * g[key][ref]["se"]
            for key in ("auc", "topk") for ref in ("random", "mean_mask", "centre")}
    for name_, low in lows.items():
        assert _close(rule["lower95"][name_], low, 1e-9), name_
    up = g["auc"]["gradcam"]["mean"] + 1.96 * g["auc"]["gradcam"]["se"]
    assert _close(rule["auc_minus_gradcam_upper95"], up, 1e-9)
    beyond = all(v > 0 for v in lows.values())
    assert rule["beyond_priors"] == beyond and rule["as_good_as_gradcam"] == (up >= 0)
    passes = beyond and up >= 0
    assert rule["passes"] == passes and k["verdicts"]["localization_rule"] == ("passes" if passes else "fails")
    e = g["energy"]
    old = (e["random"]["mean"] - 1.96 * e["random"]["se"] > 0.10 and e["centre"]["mean"] - 1.96 * e["centre"]["se"] > 0.10
           and e["gradcam"]["mean"] + 1.96 * e["gradcam"]["se"] >= 0)
    assert loc["energy_rule"]["passes"] == old
    for ref in ("random", "centre", "mean_mask", "gradcam"):
        assert k["verdicts"][f"gain_vs_{ref}"] == _versus(g["auc"][ref], 0), ref
    # integrated gradients on the first images, paired with the gain map on the same ones
    ig = k["integrated_gradients"]
    assert 0 < ig["n"] <= n and ig["auc"]["n"] == ig["gain_same_images"]["auc"]["n"] == ig["gain_minus_ig"]["auc"]["n"] == ig["n"]
    assert 0 <= ig["auc"]["mean"] <= 1 and 0 <= ig["pointing"]["mean"] <= 1
    assert _close(ig["gain_minus_ig"]["auc"]["mean"], ig["gain_same_images"]["auc"]["mean"] - ig["auc"]["mean"], 1e-9)
    for key in ("auc", "topk"):
        d = k["gain_minus_baseline_gradcam"][key]
        assert d["n"] == n and _close(d["mean"], ms["gain"][key] - k["baseline_gradcam"][key], 1e-9), key
    # by photo: counts are the photo's images, and the photos average to the overall
    counts = k["bg_counts"]
    for m, block in k["auc_by_background"].items():
        assert block["all"]["n"] == n and all(block[p]["n"] == counts[p] for p in counts), m
        assert _close(sum(block[p]["mean"] * counts[p] for p in counts) / n, block["all"]["mean"], 1e-9), m
        assert _close(block["all"]["mean"], ms[m]["auc"], 1e-9), m
    # section 3: per layer, the same numbers, the best layer, whether they follow |alpha|, gain on and off the garment
    layers = k["layers"]
    assert list(layers) == convs
    assert _close(sum(r["share_of_gain"] for r in layers.values()), 1, 1e-9)
    for c, r in layers.items():
        assert _close(r["alpha"], k["alphas"][c], 1e-12) and r["mean_abs_gain"] >= 0 and 0 <= r["share_of_gain"] <= 1
        assert _close(r["auc"], ms[f"gain:{c}"]["auc"], 1e-12) and 0 <= r["gradcam_auc"] <= 1
        assert _close(r["minus_random"]["mean"], r["auc"] - rnd["auc"], 1e-9)
        assert r["vs_random"] == _versus(r["minus_random"], 0), c
        assert 0 <= r["boosted_on_mask"] <= 1 and 0 <= r["boosted_off_mask"] <= 1
        assert math.isfinite(r["gain_on_mask"]) and math.isfinite(r["gain_off_mask"])
    assert k["best_layer"] == max(convs, key=lambda c: layers[c]["auc"])
    by_auc = sorted(convs, key=lambda c: -layers[c]["auc"])
    assert k["follows_alpha"] == (by_auc == sorted(convs, key=lambda c: -abs(k["alphas"][c])))


def _check_05_sanity(k):
    """Section 5: correlations in [-1, 1], the trained step is 1, the fixed rule at the top cascade step."""
    s = k["sanity"]
    steps = s["steps"]
    assert steps[0] == "trained" and steps[1] == "cascade:fc" and {"gatta", "untrained"} <= set(steps)
    assert [t for t in steps if t.startswith("cascade:")][-1] == "cascade:stem"
    assert s["prediction_kept"]["trained"] == 1 and all(0 <= v <= 1 for v in s["prediction_kept"].values())
    assert set(s["results"]) == {"gain", "gradcam"}
    for m, res in s["results"].items():
        assert list(res) == steps, m
        for step, r in res.items():
            assert r["spearman"] is None or -1 - 1e-9 <= r["spearman"] <= 1 + 1e-9, (m, step)
            assert 0 <= r["n_valid"] <= s["n"], (m, step)
        assert _close(res["trained"]["spearman"], 1, 1e-6) and res["trained"]["n_valid"] == s["n"], m
        rule, top = s["rule"][m], res["cascade:fc"]
        assert _close(rule["rho_top"], top["spearman"], 1e-12)
        assert _close(rule["upper95"], top["spearman"] + 1.96 * top["spearman_se"], 1e-9)
        verdict = "passes" if top["spearman"] < s["threshold"] else "fails"
        assert s["threshold"] == 0.5 and rule["verdict"] == verdict and k["verdicts"][f"sanity:{m}"] == verdict, m
        first = next((t for t in steps[1:] if t.startswith("cascade:") and res[t]["spearman"] is not None
                      and res[t]["spearman"] < 0.5), None)
        assert rule["first_below"] == first, m
    assert -1 - 1e-6 <= s["q_avg_cosine_top"]["mean"] <= 1 + 1e-6
    if s["dense_share_of_q_avg"]["n"]:
        assert s["dense_share_of_q_avg"]["mean"] >= 0


def check_05(k):
    assert k["model"] == "fmnist_clutter_gatta_resnet" and k["baseline"] == "fmnist_clutter_resnet"
    _check_alphas(k["alphas"], _bundled_alphas("fmnist-clutter-gatta-resnet"), "05 garments in clutter")
    _check_baseline(k["baseline_fingerprint"], "fmnist-clutter-resnet", "05 garments in clutter")
    convs = [c for c, kind in k["kinds"].items() if kind == "conv"]
    assert set(k["kinds"]) == set(k["alphas"]) and convs
    n, counts = k["n"], k["bg_counts"]
    assert n == 1000 and list(counts) == k["backgrounds"] == ["coins", "gravel", "retina", "rocket"]  # the test photos
    assert all(v >= 0 for v in counts.values()) and sum(counts.values()) == n
    # 1. accuracy: per photo averages to the overall; paired differences are differences of accuracies
    acc = k["accuracy"]
    assert set(acc) == {"GAttA pass 1", "GAttA pass 2", "baseline"}
    for name, block in acc.items():
        for p in list(counts) + ["all"]:
            want = n if p == "all" else counts[p]
            assert block[p]["n"] == want and 0 <= block[p]["mean"] <= 1, (name, p)
        assert _close(sum(block[p]["mean"] * counts[p] for p in counts) / n, block["all"]["mean"], 1e-9), name
    for key, (a, b) in (("pass2_minus_pass1", ("GAttA pass 2", "GAttA pass 1")),
                        ("pass2_minus_baseline", ("GAttA pass 2", "baseline"))):
        for p in list(counts) + ["all"]:
            assert _close(k[key][p]["mean"], acc[a][p]["mean"] - acc[b][p]["mean"], 1e-9), (key, p)
            assert k[key][p]["n"] == acc[a][p]["n"] and -1 <= k[key][p]["mean"] <= 1
    assert k["verdicts"]["pass2_vs_pass1"] == _versus(k["pass2_minus_pass1"]["all"], 0)
    assert k["verdicts"]["pass2_vs_baseline"] == _versus(k["pass2_minus_baseline"]["all"], 0)
    assert 0.1 < acc["baseline"]["all"]["mean"] and 0.1 < acc["GAttA pass 2"]["all"]["mean"]  # above chance
    # 2-3. localization
    _check_05_localization(k, convs)
    # 4. ROAD: AUCs in [0, 1], paired differences are differences of means, verdicts as in notebook 3
    road = k["road"]
    assert 0 < road["n"] <= n and set(road["methods"]) == {"gain", "gradcam", "random"}
    rnd = road["methods"]["random"]
    for m, r in road["methods"].items():
        for kind in ("deletion", "insertion"):
            assert 0 <= r[f"{kind}_auc"] <= 1 and r[f"{kind}_auc_se"] >= 0, (m, kind)
            if m != "random":
                assert _close(r[f"{kind}_minus_random"], r[f"{kind}_auc"] - rnd[f"{kind}_auc"], 1e-9), (m, kind)
                assert k["verdicts"][f"road:{m}:{kind}"] == _verdict(r, kind), (m, kind)
    better = {"deletion": "below", "insertion": "above"}
    for kind in ("deletion", "insertion"):
        d = road["gain_minus_gradcam"][kind]
        _mean_block(d, road["n"])
        g, c = road["methods"]["gain"], road["methods"]["gradcam"]
        assert _close(d["mean"], g[f"{kind}_auc"] - c[f"{kind}_auc"], 1e-9), kind
        v = _versus(d, 0)
        want = "indistinguishable from" if v == "indistinguishable from" else "better than" if v == better[kind] else "worse than"
        assert k["verdicts"][f"road:gain_vs_gradcam:{kind}"] == want, kind
    # 5. sanity
    _check_05_sanity(k)
    assert k["seconds"] > 0  # how long it takes: benchmarks/notebooks.py
    return k


CHECKS = {"01_quickstart.ipynb": check_01, "02_layer_contributions.ipynb": check_02,
          "03_captum_and_faithfulness.ipynb": check_03, "04_two_garments_and_a_cue.ipynb": check_04,
          "05_garments_in_clutter.ipynb": check_05}


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_stored_notebook(name):
    """The committed file: small, with outputs that read on the web, made with the bundled models."""
    path = os.path.join(NB_DIR, name)
    assert os.path.getsize(path) < MAX_BYTES, f"{name} is {os.path.getsize(path)} bytes"
    nb = nbformat.read(path, as_version=4)
    assert not _errors(nb), _errors(nb)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), f"{name}: not fully executed"
    assert _n_images(nb) >= MIN_FIGURES[name]
    check_structure(nb, name)
    CHECKS[name](_key_numbers(nb))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_executes(name, tmp_path, monkeypatch):
    """A fresh run: no error, figures shown and saved, key numbers that hold up (run time: benchmarks/notebooks.py)."""
    monkeypatch.delenv("MPLBACKEND", raising=False)  # set by Streamlit when the app tests ran in this process
    nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
    for cell in nb.cells:  # run from a clean slate, not on top of the stored outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not _errors(nb), _errors(nb)
    assert _n_images(nb) >= MIN_FIGURES[name]
    check_structure(nb, name)
    k = CHECKS[name](_key_numbers(nb))
    assert len(k["figures"]) >= MIN_FIGURES[name]
    for f in k["figures"]:
        p = tmp_path / f
        assert p.is_file() and p.stat().st_size > 1000, f
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
