"""advkit.perturbations.analysis: corruption sweeps, distance-vs-accuracy statistics, spatial budget.

Pinned against closed forms (Spearman's ``1 - 6 sum d^2 / (n (n^2 - 1))``, Kendall's pair count,
MNIST-C brightness moving the black background by exactly 0.5, the RGB distances of a grey
image), a brute-force pair search, direct evaluation of the corrupted batch, and the library's
own ``spatial_attack`` (worst-of-j must fool exactly the images it fools, from the same draws).
"""

from __future__ import annotations

import itertools
import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

import advkit.perturbations as P
import advkit.viz
from advkit.metrics import lp_norm


@pytest.fixture(scope="module")
def digits(mnist_test):
    x, y = mnist_test
    return x[:60], y[:60]


# --------------------------------------------------------------------------- rank correlation

def test_spearman_closed_form_and_perfect_orderings():
    d = [0.3, 1.2, 2.5, 0.9, 4.0, 3.1, 1.7]
    acc = [0.95, 0.70, 0.80, 0.99, 0.20, 0.10, 0.90]
    rows = [{"l2": a, "accuracy": b} for a, b in zip(d, acc)]
    rank = lambda v: [sorted(v).index(e) + 1 for e in v]          # no ties here
    n = len(d)
    expected = 1 - 6 * sum((p - q) ** 2 for p, q in zip(rank(d), rank(acc))) / (n * (n ** 2 - 1))
    got = P.rank_correlation(rows)
    assert got["n"] == n
    assert got["rho"] == pytest.approx(expected, abs=1e-12)
    assert got["rho"] == pytest.approx(-23 / 28, abs=1e-12)         # by hand: sum d^2 = 102, 1 - 612/336
    # a distance that orders the levels exactly by their cost: -1, and +1 for the reverse
    mono = [{"l2": float(i), "accuracy": 1 - i / 10} for i in range(6)]
    assert P.rank_correlation(mono)["rho"] == pytest.approx(-1.0)
    assert P.rank_correlation([{"l2": r["l2"], "accuracy": -r["accuracy"]} for r in mono])["rho"] == pytest.approx(1.0)


def test_kendall_counts_pairs():
    d = [1.0, 2.0, 3.0, 4.0]
    acc = [0.9, 0.95, 0.5, 0.4]
    rows = [{"l1": a, "accuracy": b} for a, b in zip(d, acc)]
    pairs = list(itertools.combinations(range(4), 2))
    conc = sum((d[i] - d[j]) * (acc[i] - acc[j]) > 0 for i, j in pairs)
    disc = len(pairs) - conc
    got = P.rank_correlation(rows, "l1", method="kendall")
    assert got["rho"] == pytest.approx((conc - disc) / len(pairs))   # no ties: tau_b = tau_a
    assert got["rho"] == pytest.approx(-2 / 3)


def test_rank_correlation_rejects_bad_input():
    rows = [{"l2": float(i), "accuracy": 0.5 + i / 10} for i in range(4)]
    with pytest.raises(ValueError, match="spearman"):
        P.rank_correlation(rows, method="pearson")
    with pytest.raises(KeyError, match="linf"):
        P.rank_correlation(rows, "linf")
    with pytest.raises(ValueError, match="at least 3"):
        P.rank_correlation(rows[:2])
    with pytest.raises(ValueError, match="constant"):
        P.rank_correlation([{"l2": 1.0, "accuracy": a} for a in (0.1, 0.2, 0.3)])
    with pytest.raises(ValueError, match="empty"):
        P.rank_correlation([])


# --------------------------------------------------------------------------- discordant pairs

def test_discordant_pairs_match_brute_force():
    g = torch.Generator().manual_seed(3)
    d = torch.rand(12, generator=g).tolist()
    m = torch.rand(12, generator=g).tolist()
    rows = [{"perturbation": f"p{i}", "level": float(i), "l2": a, "accuracy": b} for i, (a, b) in enumerate(zip(d, m))]
    got = P.discordant_pairs(rows)
    brute = {(i, j) for i in range(12) for j in range(12) if d[i] < d[j] and m[i] < m[j]}
    assert {(int(p["small"].split()[1]), int(p["large"].split()[1])) for p in got} == brute
    assert all(rows[p["small_index"]]["level"] == float(p["small"].split()[1]) for p in got)
    gaps = [p["gap"] for p in got]
    assert gaps == sorted(gaps, reverse=True)
    top = got[0]
    assert top["gap"] == pytest.approx(top["large_metric"] - top["small_metric"])
    assert top["ratio"] == pytest.approx(top["large_distance"] / top["small_distance"])
    # min_gap keeps only the pairs beyond it
    assert [p for p in got if p["gap"] > 0.3] == P.discordant_pairs(rows, min_gap=0.3)


def test_discordant_pairs_z_uses_the_two_proportion_standard_error():
    rows = [{"perturbation": "a", "level": 1.0, "n": 100, "l2": 1.0, "accuracy": 0.80},
            {"perturbation": "b", "level": 2.0, "n": 100, "l2": 2.0, "accuracy": 0.90},
            {"perturbation": "c", "level": 3.0, "n": 10000, "l2": 3.0, "accuracy": 0.85}]
    # se(a, b) = sqrt(.8 * .2 / 100 + .9 * .1 / 100) = 0.05: the gap 0.10 is exactly 2 se
    assert [(p["small"], p["large"]) for p in P.discordant_pairs(rows, z=1.9)] == [("a 1", "b 2")]
    assert [(p["small"], p["large"]) for p in P.discordant_pairs(rows, z=2.01)] == []     # a-c: 0.05 / 0.0402 = 1.245 se
    assert len(P.discordant_pairs(rows, z=1.2)) == 2 and len(P.discordant_pairs(rows, z=1.3)) == 1
    with pytest.raises(ValueError, match="proportion"):
        P.discordant_pairs([dict(r, accuracy=5.0) for r in rows], z=2)
    with pytest.raises(KeyError, match="'n'"):
        P.discordant_pairs([{k: v for k, v in r.items() if k != "n"} for r in rows], z=2)


def test_no_discordant_pair_when_distance_orders_the_cost():
    rows = [{"perturbation": "a", "level": float(i), "l2": float(i), "accuracy": 1 - i / 10} for i in range(5)]
    assert P.discordant_pairs(rows) == []
    with pytest.raises(ValueError, match="min_gap"):
        P.discordant_pairs(rows, min_gap=-1)


# --------------------------------------------------------------------------- corruption sweep

def test_corruption_sweep_equals_direct_evaluation(digits, zoo_models, one_thread):
    x, y = digits
    names = ["brightness", "stripe", "shot_noise"]
    rows = P.corruption_sweep(zoo_models, x, y, names=names, progress=False)
    assert [(r["model"], r["perturbation"]) for r in rows] == [(m, c) for c in names for m in zoo_models]
    for r in rows:
        xc = P.mnist_c(x, r["perturbation"], seed=0)
        model = zoo_models[r["model"]]
        acc = (model(xc).argmax(1) == y).float().mean().item()
        assert r["accuracy"] == pytest.approx(acc) and r["error"] == pytest.approx(1 - acc)
        assert r["severity"] is None and r["n"] == len(x)
        assert r["l2"] == pytest.approx(lp_norm(xc - x, 2).mean().item(), rel=1e-6)
    # MNIST-C brightness is clip(x + 0.5): the black background moves by exactly 0.5
    bright = next(r for r in rows if r["perturbation"] == "brightness")
    assert bright["linf"] == pytest.approx(0.5, abs=1e-6)
    # in RGB space a grey image's distances are L1 x 3, L2 x sqrt(3), Linf unchanged
    rgb = P.corruption_sweep(zoo_models["lenet5"], x, y, names=names, distance_as_rgb=True, progress=False)
    grey = [r for r in rows if r["model"] == "lenet5"]
    for a, b in zip(rgb, grey):
        assert a["l1"] == pytest.approx(3 * b["l1"], rel=1e-5)
        assert a["l2"] == pytest.approx(math.sqrt(3) * b["l2"], rel=1e-5)
        assert a["linf"] == pytest.approx(b["linf"], rel=1e-6)
        assert a["accuracy"] == b["accuracy"]


def test_imagenet_c_sweep_and_mce(digits, lenet, one_thread):
    x, y = digits
    xr = P.to_rgb(x[:20])
    rows = P.corruption_sweep({"a": lenet, "b": lenet}, xr, y[:20], suite="imagenet_c",
                              names=["gaussian_noise", "contrast"], severities=(1, 3, 5),
                              before_model=P.to_grey, progress=False)
    assert [(r["perturbation"], r["severity"]) for r in rows[::2]] == [
        (c, s) for c in ("gaussian_noise", "contrast") for s in (1, 3, 5)]
    e = P.errors_by_corruption(rows, "a")
    assert list(e) == ["gaussian_noise", "contrast"] and all(len(v) == 3 for v in e.values())
    direct = (lenet(P.to_grey(P.imagenet_c(xr, "contrast", 5))).argmax(1) != y[:20]).float().mean().item()
    assert e["contrast"][2] == pytest.approx(direct)
    # the same model as its own baseline: mCE 100 (wherever the baseline's errors are defined)
    defined = {c: v for c, v in e.items() if sum(v) > 0}
    if defined:
        assert P.mce(defined, P.errors_by_corruption(rows, "b")) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="no rows for model"):
        P.errors_by_corruption(rows, "c")


def test_corruption_sweep_rejects_bad_input(digits, lenet):
    x, y = digits
    with pytest.raises(ValueError, match="suite"):
        P.corruption_sweep(lenet, x, y, suite="cifar_c")
    with pytest.raises(ValueError, match="unknown mnist_c"):
        P.corruption_sweep(lenet, x, y, names=["snow"])
    with pytest.raises(NotImplementedError, match="frost"):
        P.corruption_sweep(lenet, x, y, suite="imagenet_c", names=["frost"])
    with pytest.raises(TypeError, match="nn.Module"):
        P.corruption_sweep({"m": "lenet"}, x, y)


# --------------------------------------------------------------------------- spatial budget

def test_spatial_budget_worst_of_j_equals_spatial_attack(digits, lenet, one_thread):
    x, y = digits
    x, y = x[:40], y[:40]
    k = 6
    out = P.spatial_budget(lenet, x, y, k=k, seed=5)
    assert out["k"] == list(range(1, k + 1)) and out["correct"].shape == (k, len(x))
    for j in (1, 3, k):
        res = P.spatial_attack(lenet, x, y, k=j, seed=5)
        assert out["worst_of_k_accuracy"][j - 1] == pytest.approx(1 - res.success.float().mean().item())
    # the first draw is one random transformation per image: random accuracy at j = 1 equals worst-of-1
    assert out["random_accuracy"][0] == pytest.approx(out["worst_of_k_accuracy"][0])
    worst = out["worst_of_k_accuracy"]
    assert all(a >= b for a, b in zip(worst, worst[1:]))
    assert all(r >= w - 1e-12 for r, w in zip(out["random_accuracy"], worst))
    # no rotation and no shift: every draw is the clean image
    clean = (lenet(x).argmax(1) == y).float().mean().item()
    still = P.spatial_budget(lenet, x, y, k=3, max_rotation=0, max_translation=0)
    assert still["random_accuracy"] == pytest.approx([clean] * 3) and still["worst_of_k_accuracy"] == pytest.approx([clean] * 3)
    with pytest.raises(ValueError, match="positive int"):
        P.spatial_budget(lenet, x, y, k=0)


# --------------------------------------------------------------------------- plots

def test_plots_draw_what_they_are_given():
    rows = [{"model": m, "perturbation": p, "level": float(lv), "accuracy": 0.5, "l2": float(lv)}
            for m in ("a", "b") for p in ("rotate", "contrast") for lv in (1, 2, 3)]
    fig = advkit.viz.plot_sweep(rows)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["rotate", "contrast"]
    assert [len(ax.lines) for ax in axes] == [2, 2]
    assert list(axes[0].lines[0].get_ydata()) == [50.0, 50.0, 50.0]
    wrapped = advkit.viz.plot_sweep(rows, ncols=1)
    assert [ax.get_title() for ax in wrapped.axes] == ["rotate", "contrast"]
    assert wrapped.axes[0].get_position().y0 > wrapped.axes[1].get_position().y0      # one panel per row
    ax = advkit.viz.plot_distance_vs_metric(rows, highlight=rows[:2])
    assert ax.get_xlabel() == "mean L2 distance"
    assert len(ax.collections) == 3                                       # two hues + the highlight circles
    imgs = [torch.zeros(3, 1, 4, 4), torch.ones(2, 3, 5, 5)]
    fig = advkit.viz.show_grid(imgs, row_titles=["a", "b"], col_titles=[["1", "2", "3"], ["x", "y"]],
                               red=[[False, True, False], [False, False]])
    assert len(fig.axes) == 6
    assert fig.axes[1].title.get_color() == "red" and fig.axes[0].title.get_color() == "black"
    with pytest.raises(ValueError, match="row_titles"):
        advkit.viz.show_grid(imgs, row_titles=["a"])
