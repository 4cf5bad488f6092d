"""The thesis reproduction (advkit.thesis, advkit reproduce thesis) on tiny configurations.

The statistics are checked against closed forms; the phases against the library functions they
wrap; the pipeline runs end to end on all four data sets, the Imagenette and Imagewoof path on
the staged mini subsets, and the command line runs lab 08 through papermill.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from advkit import thesis
from advkit.attacks import pgd
from advkit.models import IMAGENET_STD
from advkit.perturbations import THESIS_LEVELS, to_rgb

TINY = {
    "mnist": dict(n_train=60, n_val=60, epochs=1, batch_size=30),
    "pentomino": dict(image_size=40, n_train=60, n_val=60, epochs=1, batch_size=30),
    "imagenette": dict(image_size=32, n_train=40, epochs=1, batch_size=20),
    "imagewoof": dict(image_size=32, n_train=40, epochs=1, batch_size=20),
}


@pytest.fixture
def offline(monkeypatch, staged, tmp_path):
    """Staged data, a fresh cache, and no ImageNet weights (as on the CI machine)."""
    monkeypatch.setenv("ADVKIT_DATA", str(staged))
    monkeypatch.setenv("ADVKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(thesis, "pretrained_available", lambda *a, **k: False)
    return tmp_path


# ------------------------------------------------------------------------------------- settings
def test_config_validates_with_messages_that_say_what_to_fix():
    assert thesis.config("mnist").image_size == 28
    assert thesis.config("imagenette", "gpu").image_size == 160
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        thesis.config("cifar")
    with pytest.raises(ValueError, match="unknown scale"):
        thesis.config("mnist", "tpu")
    with pytest.raises(TypeError, match="unknown settings"):
        thesis.config("mnist", epoch=3)
    with pytest.raises(ValueError, match="multiple of 4"):
        thesis.config("pentomino", image_size=42)
    with pytest.raises(ValueError, match="n_train must be None"):
        thesis.config("mnist", n_train=5)
    with pytest.raises(ValueError, match="pretrained must be"):
        thesis.config("mnist", pretrained="yes")


def test_the_thesis_numbers_and_settings_are_the_published_ones():
    assert thesis.PGD_SETTINGS == dict(eps=0.3, eps_step=0.1, max_iter=100, norm="inf", random_start=False)
    assert thesis.THESIS_TABLE8 == {"mnist": 0.725, "pentomino": 0.428, "imagenette": 0.731, "imagewoof": 0.666}
    assert thesis.THESIS_TABLE9["pentomino"] == 0.9819 and thesis.THESIS_TABLE9["mnist"] == 0.24
    assert thesis.NORMALIZATION["mnist"] == ((0.131,) * 3, (0.308,) * 3)
    # the consistent reading of Table 9's Pentomino row: 98.19 + 1.45 = 99.64 before the attack
    row = thesis.THESIS_PENTOMINO_ROW
    assert row["after"] - row["before"] != pytest.approx(row["difference"])
    assert row["after"] + row["difference"] == pytest.approx(0.9964)


def test_normalised_budget_is_eps_times_std():
    assert thesis.normalised_eps("mnist") == pytest.approx(0.3 * 0.308)
    assert thesis.normalised_eps("imagewoof") == pytest.approx(0.3 * np.mean(IMAGENET_STD))


# ----------------------------------------------------------------------------------- statistics
def test_wilson_interval_equals_the_closed_form():
    z = 1.959963984540054
    for k, n in [(0, 10), (3, 10), (10, 10), (24, 100), (1, 500)]:
        p = k / n
        c, h = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = thesis.proportion_ci(k, n)
        assert lo == pytest.approx((c - h) / (1 + z * z / n), abs=1e-9)
        assert hi == pytest.approx((c + h) / (1 + z * z / n), abs=1e-9)


def test_clopper_pearson_interval_equals_the_closed_form_at_the_edges():
    # k = 0: the upper bound solves (1 - p)^n = alpha / 2; k = n: the lower bound solves p^n = alpha / 2
    lo, hi = thesis.proportion_ci(0, 10, method="clopper-pearson")
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = thesis.proportion_ci(10, 10, method="clopper-pearson")
    assert hi == 1 and lo == pytest.approx(0.025 ** (1 / 10))
    assert all(math.isnan(v) for v in thesis.proportion_ci(0, 0))
    with pytest.raises(ValueError, match="wilson"):
        thesis.proportion_ci(1, 2, method="wald")


def test_bootstrap_interval_of_the_mean_over_images():
    rng = np.random.default_rng(0)
    values = rng.random(400)
    lo, hi = thesis.bootstrap_mean_ci(values, seed=1)
    se = values.std(ddof=1) / math.sqrt(len(values))
    assert lo < values.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)     # the normal approximation at n = 400
    assert thesis.bootstrap_mean_ci(np.full(5, 0.7)) == (0.7, 0.7)  # no spread, no interval
    assert thesis.bootstrap_mean_ci(values, seed=1) == (lo, hi)    # seeded


class _Fixed(nn.Module):
    """Predicts ``pred[i]`` for image i (the image's first pixel holds i)."""

    def __init__(self, pred):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.pred = torch.as_tensor(pred)

    def forward(self, x):
        i = x.flatten(1)[:, 0].round().long()
        return nn.functional.one_hot(self.pred[i], 10).float() + 0 * self.w


def test_select_takes_the_first_correct_images_per_class_and_reports_shortfalls():
    y = torch.tensor([0, 0, 0, 1, 1, 2] + list(range(3, 10)))
    pred = y.clone()
    pred[0] = 5                # the first 0 is wrong: class 0 starts at index 1
    pred[5] = 0                # class 2's only image is wrong
    x = torch.arange(len(y)).float().view(-1, 1, 1, 1)
    idx, short = thesis.select(_Fixed(pred).eval(), x, y, per_class=2)
    assert idx[:2].tolist() == [1, 2] and idx[2:4].tolist() == [3, 4]
    assert short == {2: 0, **{c: 1 for c in range(3, 10)}}
    idx1, short1 = thesis.select(_Fixed(pred).eval(), x, y, per_class=1)
    assert idx1.tolist() == [1, 3] + list(range(6, 13)) and short1 == {2: 0}


# -------------------------------------------------------------------------------------- phases
def _lenet():
    from advkit import models

    torch.manual_seed(0)
    return models.lenet5().eval()


def test_pgd_phase_is_pgd_with_the_thesis_settings_and_times_it(staged, monkeypatch):
    monkeypatch.setenv("ADVKIT_DATA", str(staged))
    from advkit.data import mnist

    x, y = mnist("test").tensors
    x, y = x[:10], y[:10]
    model = nn.Sequential(nn.Conv2d(3, 1, 1), _lenet()).eval()   # RGB in, as the thesis's ResNet-50
    ph = thesis.pgd_phase(model, x, y, dataset="mnist", max_iter=5, progress=False)
    ref = pgd(model, to_rgb(x), y, **{**thesis.PGD_SETTINGS, "max_iter": 5})
    assert torch.equal(ph.x_adv, ref.x_adv)
    assert ph.extra["accuracy"] == pytest.approx(ref.robust_accuracy)
    assert ph.extra["settings"]["eps"] == 0.3 and ph.extra["settings"]["random_start"] is False
    assert ph.extra["linf"] <= 0.3 + 1e-6 and ph.extra["seconds"] > 0
    with torch.no_grad():
        p = model(ph.x_adv).softmax(1).gather(1, y[:, None]).mean().item()
    assert ph.extra["mean_true_prob_after"] == pytest.approx(p, abs=1e-6)


def test_perturbation_phase_covers_every_level_and_averages_them(staged, monkeypatch):
    monkeypatch.setenv("ADVKIT_DATA", str(staged))
    from advkit.data import mnist

    x, y = mnist("test").tensors
    model = nn.Sequential(nn.Conv2d(3, 1, 1), _lenet()).eval()
    ph = thesis.perturbation_phase(model, x[:12], y[:12], dataset="mnist", progress=False)
    assert len(ph.rows) == sum(len(v) for v in THESIS_LEVELS.values()) == 20
    per_pert = [np.mean([r["accuracy"] for r in ph.rows if r["perturbation"] == name]) for name in THESIS_LEVELS]
    assert ph.extra["accuracy"] == pytest.approx(np.mean(per_pert))        # Table 8's aggregation
    assert np.mean(ph.extra["per_image"]) == pytest.approx(ph.extra["accuracy"])
    ident = [r for r in ph.rows if (r["perturbation"], r["level"]) in (("brightness", 0.5), ("jitter", 0.0))]
    assert len(ident) == 2 and all(r["linf"] < 1e-3 for r in ident)


def test_progress_file_gets_one_line_per_update_and_a_last_one(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv("ADVKIT_PROGRESS_FILE", str(path))
    with thesis._Bar("mnist", "training", 3, progress=False) as bar:
        for _ in range(3):
            bar.update()
    with thesis._Bar("mnist", "training", 2, progress=False) as other:
        other.update(2)
    events = [json.loads(line) for line in path.read_text().splitlines()]
    first = events[0]["id"]
    assert events[0] == {"id": first, "dataset": "mnist", "phase": "training", "n": 0, "total": 3}
    assert {"id": first, "dataset": "mnist", "phase": "training", "n": 3, "total": 3, "done": True} in events
    assert events[-1]["id"] != first and events[-1]["n"] == 2 and events[-1]["done"]   # each bar its own id


def test_pretrained_true_offline_fails_clearly_and_auto_trains_from_scratch(offline, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(offline / "torch"))
    from advkit.models import PretrainedWeightsUnavailable

    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained=False"):
        thesis.train(thesis.config("mnist", pretrained=True, **TINY["mnist"]), progress=False)
    assert thesis._use_pretrained(thesis.config("mnist")) is False


# ------------------------------------------------------------------------------------ pipeline
@pytest.mark.parametrize("name", thesis.DATASETS)
def test_the_pipeline_runs_on_a_tiny_configuration(name, offline):
    cfg = thesis.config(name, **TINY[name])
    data = thesis.load_data(cfg)
    size = cfg.image_size
    channels = 1 if name in thesis.GREY else 3
    assert data["x_train"].shape[1:] == (channels, size, size) and data["x_val"].shape[1:] == (channels, size, size)
    assert len(data["class_names"]) == 10
    if name in ("imagenette", "imagewoof"):
        assert data["pipeline_check"] and data["source"].endswith("-mini")   # the staged subsets
        assert len(data["x_train"]) == 40 and len(data["x_val"]) == 100
    model = thesis.train(cfg, progress=False, data=data)
    rec = model.thesis_record
    assert rec["label"] == "trained from scratch" and not rec["cached"] and 0 <= rec["val_accuracy"] <= 1
    again = thesis.train(cfg, progress=False)
    assert again.thesis_record["cached"] and again.thesis_record["val_accuracy"] == rec["val_accuracy"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())

    idx, short = thesis.select(model, data["x_val"], data["y_val"], 1)
    assert len(idx) + sum(1 - v for v in short.values()) == 10
    if len(idx) == 0:
        pytest.skip(f"the tiny {name} model classifies no validation image correctly")
    x, y = data["x_val"][idx], data["y_val"][idx]
    pert = thesis.perturbation_phase(model, x, y, dataset=name, progress=False)
    atk = thesis.pgd_phase(model, x, y, dataset=name, max_iter=2, progress=False)
    e = thesis.normalised_eps(name)
    atk_n = thesis.pgd_phase(model, x, y, dataset=name, max_iter=2, eps=e, eps_step=e / 3, progress=False)
    results = {name: {"perturbations": pert, "perturbations_many": pert, "pgd": atk, "pgd_normalised": atk_n,
                      "pgd_many": atk, "pgd_normalised_many": atk_n, "train": rec}}
    t8, t9, tci = thesis.table8(results), thesis.table9(results), thesis.table_ci(results)
    assert t8.loc[name, "thesis accuracy (%)"] == pytest.approx(100 * thesis.THESIS_TABLE8[name])
    assert t8.loc[name, "our accuracy (%)"] == pytest.approx(100 * pert.extra["accuracy"], abs=0.01)
    assert t9.loc[name, "thesis after PGD (%)"] == pytest.approx(100 * thesis.THESIS_TABLE9[name])
    assert tci.loc[name, "10-image results inside"] == "yes"   # the same images: inside by construction
    import matplotlib

    matplotlib.use("Agg")
    figs = {"fig22": thesis.figure22(model, x[:1], y[:1], dataset=name, class_names=data["class_names"]),
            "fig23": thesis.figure23(x, atk, y, dataset=name, class_names=data["class_names"])}
    written = thesis.save(offline / "out", tables={"table8": t8, "table9": t9}, figures=figs)
    assert sorted(p.name for p in written) == ["fig22.png", "fig23.png", "table8.csv", "table8.md", "table9.csv", "table9.md"]
    assert (offline / "out" / "table8.md").read_text().startswith("| data set")
    assert (offline / "out" / "fig22.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------- CLI
def _cli(*args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "advkit.cli", "reproduce", "thesis", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_cli_refuses_bad_arguments_before_running_anything(tmp_path):
    r = _cli("--datasets", "mnist", "cifar", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "unknown data set(s) ['cifar']" in r.stderr
    r = _cli("--images", "5", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "images must be an int >= 10" in r.stderr
    r = _cli("-p", "no_such=1", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no parameter(s) ['no_such']" in r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_runs_lab_08_and_writes_the_tables_and_figures(offline, tmp_path):
    import os

    settings = {"mnist": TINY["mnist"], "imagewoof": TINY["imagewoof"]}
    out = tmp_path / "thesis"
    r = _cli("--datasets", "mnist", "imagewoof", "--images", "10", "--out", str(out),
             "-p", f"settings={json.dumps(settings)}", "-p", 'pgd_overrides={"max_iter": 2}', env={**os.environ})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    for table in ("table8", "table9", "table_ci", "summary"):
        assert {f"{table}.csv", f"{table}.md"} <= names
    for fig in ("fig20_accuracy", "fig21_distances", "fig22_mnist", "fig22_imagewoof", "fig23_mnist", "fig23_imagewoof"):
        assert f"{fig}.png" in names
    assert "08_thesis_reproduction.ipynb" in names
    assert "## table8" in r.stdout and "| mnist" in r.stdout        # the tables are printed at the end
    events = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    phases = {(e["dataset"], e["phase"].split(",")[0].split(" eps")[0]) for e in events}
    for d in ("mnist", "imagewoof"):
        assert {(d, "training"), (d, "perturbations"), (d, "PGD")} <= phases
    assert len({e["id"] for e in events}) >= 2 * 7       # per data set: training, 2 sweeps, 4 PGD runs
    assert "mnist: training" in r.stderr                            # the bars were drawn
