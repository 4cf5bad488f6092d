"""The scoreboard (advkit.defenses.scoreboard): a masked defense looks robust to the non-adaptive
attacks only, and its audit column says so; an honest model shows no flag and no robustness;
every attack is judged on the deployed model; bad input fails with a message."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.blackbox import RandomizedModel
from advkit.defenses import TRANSFORMS, Defense, StaircaseModel, scoreboard

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 0.3
FAST_AUDIT = dict(long_steps=40, square_queries=300)


@pytest.fixture(scope="module")
def digits(mnist_test):
    x, y = mnist_test
    return x[:20], y[:20]


@pytest.fixture(scope="module")
def board(lenet, digits):
    x, y = digits
    return scoreboard({"standard": lenet,
                       "staircase": Defense(StaircaseModel(lenet, levels=16), StaircaseModel(lenet, levels=16, bpda=True))},
                      x, y, eps=EPS, audit_kwargs=FAST_AUDIT, progress=False)


def test_columns_are_split_by_attack_kind(board):
    groups = list(dict.fromkeys(board.columns.get_level_values(0)))
    assert groups == ["", "non-adaptive", "adaptive", "black-box", "audit"]
    assert ("non-adaptive", "PGD-20 (CE)") in board.columns and ("black-box", "Square-300") in board.columns
    assert board.attrs["eps"] == EPS and board.attrs["n"] == 20 and set(board.attrs["reports"]) == {"standard", "staircase"}


def test_honest_model_is_broken_by_every_attack_and_not_flagged(board):
    row = board.loc["standard"]
    assert row[("", "clean")] == 1.0                      # LeNet-5 on its first 20 test digits
    assert row[("non-adaptive", "PGD-20 (CE)")] <= 0.05   # Linf 0.3 breaks an undefended MNIST model
    assert row[("adaptive", "accuracy")] <= 0.05 and row[("black-box", "Square-300")] <= 0.15
    assert row[("audit", "flags")] == "none"


def test_staircase_looks_robust_only_to_the_non_adaptive_attacks(board):
    # masking.py's measured claim (100 digits): PGD 1.0 on the staircase, Square 0.01, BPDA 0.0
    row = board.loc["staircase"]
    assert row[("", "clean")] == 1.0
    assert row[("non-adaptive", "FGSM")] >= 0.9 and row[("non-adaptive", "PGD-20 (CE)")] >= 0.9
    assert row[("adaptive", "accuracy")] <= 0.1           # BPDA
    assert row[("black-box", "Square-300")] <= 0.2
    assert row[("", "worst case")] <= min(row[("adaptive", "accuracy")], row[("black-box", "Square-300")])
    flags = row[("audit", "flags")].split(", ")
    assert "zero_gradients" in flags and "blackbox_beats_whitebox" in flags


def test_worst_case_is_per_input_over_all_attacks(board):
    for name in board.index:
        row = board.loc[name]
        accs = [row[c] for c in board.columns if c[1] not in ("attack", "flags", "worst case")]
        assert row[("", "worst case")] <= min(accs) + 1e-12


def test_success_is_judged_on_the_deployed_model(lenet, digits):
    """An adaptive view that misclassifies everything 'succeeds' at once on the view (early stop at
    x_adv = x); judged on the deployed model, nothing was fooled: adaptive accuracy = clean accuracy."""
    x, y = digits

    class AlwaysWrong(nn.Module):
        def forward(self, z):
            logits = lenet(z)
            return logits.roll(1, dims=1)                 # the argmax moves to another class

    view = AlwaysWrong().eval()
    with torch.no_grad():
        assert (view(x).argmax(1) != y).all()
    board = scoreboard({"liar": Defense(lenet, view)}, x, y, eps=0.01, restarts=0, audit=False, progress=False)
    row = board.loc["liar"]
    assert row[("adaptive", "accuracy")] == row[("", "clean")] == 1.0
    assert ("audit", "flags") not in board.columns


def test_randomised_defense_gets_eot_and_the_randomised_flag(lenet, digits):
    x, y = digits[0][:10], digits[1][:10]
    noisy = RandomizedModel(lenet, TRANSFORMS["noise"].make(sigma=0.2), seed=0).eval()
    board = scoreboard({"noise": Defense(noisy, attack="eot")}, x, y, eps=EPS, adaptive_steps=20, eot_samples=4,
                       square_queries=100, audit_kwargs=dict(long_steps=20, square_queries=100), progress=False)
    row = board.loc["noise"]
    assert row[("adaptive", "attack")].startswith("EOT")
    assert row[("adaptive", "accuracy")] <= 0.1
    assert "randomised_model" in row[("audit", "flags")]


def test_labels_only_output_defense_skips_square_and_runs_hopskipjump(lenet, digits):
    x, y = digits[0][:5], digits[1][:5]
    board = scoreboard({"top-1 only": Defense(lenet, attack="labels", output="labels")}, x, y, eps=EPS,
                       label_queries=300, audit=False, progress=False)
    row = board.loc["top-1 only"]
    assert torch.isnan(torch.tensor(row[("black-box", "Square-300")]))
    assert row[("adaptive", "attack")].startswith("HopSkipJump")
    assert row[("non-adaptive", "PGD-20 (CE)")] <= 0.2     # the weights are not behind the output defense


def test_bad_input_says_what_to_fix(lenet, digits):
    x, y = digits
    with pytest.raises(ValueError, match="non-empty mapping"):
        scoreboard({}, x, y, eps=EPS)
    with pytest.raises(ValueError, match="eps must be > 0"):
        scoreboard({"m": lenet}, x, y, eps=0.0)
    with pytest.raises(TypeError, match="nn.Module or a Defense"):
        scoreboard({"m": "lenet"}, x, y, eps=EPS)
    with pytest.raises(ValueError, match="restarts must be an int"):
        scoreboard({"m": lenet}, x, y, eps=EPS, restarts=-1)
    with pytest.raises(ValueError, match="randomised model"):
        Defense(lenet, attack="eot")
    with pytest.raises(ValueError, match="attack must be one of"):
        Defense(lenet, attack="bpda")
