"""The black-box threat model: what an Oracle answers, how it counts, and that no gradient passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advkit.blackbox import Oracle, QueryBudgetExceeded, as_oracle, finish, margin_from_scores
from conftest import linear_model


class Spy(nn.Module):
    """Records what the oracle lets the model see: rows received, grad mode, input requires_grad."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.rows = 0
        self.saw_grad = False

    def forward(self, x):
        self.rows += len(x)
        self.saw_grad |= torch.is_grad_enabled() or x.requires_grad or any(p.requires_grad for p in self.parameters())
        return self.inner(x)


@pytest.fixture
def spy():
    return Spy(linear_model(d=16, k=4)).eval()


def test_outputs_are_what_the_threat_model_allows(spy):
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        logits = spy.inner(x)
    assert torch.equal(Oracle(spy, "labels", n=3)(x), logits.argmax(1))
    assert torch.allclose(Oracle(spy, "scores", n=3)(x), logits.softmax(1))
    assert torch.allclose(Oracle(spy, "logits", n=3)(x), logits)
    rounded = Oracle(spy, "scores", n=3, decimals=1)(x)
    assert torch.allclose(rounded, torch.round(logits.softmax(1) * 10) / 10)
    assert Oracle(spy, "labels", n=3)(x).dtype == torch.long


def test_queries_are_counted_per_sample_and_the_budget_holds(spy):
    x = torch.rand(4, 1, 4, 4)
    o = Oracle(spy, "scores", n=4, max_queries=3)
    o(x)
    o(x[[1, 1, 2]], idx=torch.tensor([1, 1, 2]))
    assert o.queries.tolist() == [1, 3, 2, 1]
    assert o.remaining().tolist() == [2, 0, 1, 2]
    assert o.exhausted().tolist() == [False, True, False, False]
    assert spy.rows == 7 == o.total_queries
    with pytest.raises(QueryBudgetExceeded, match="max_queries=3"):
        o(x[[1]], idx=torch.tensor([1]))
    assert spy.rows == 7 and o.queries.tolist() == [1, 3, 2, 1], "a refused query is neither answered nor counted"


def test_no_gradient_reaches_the_model_or_leaves_the_oracle(spy):
    x = torch.rand(2, 1, 4, 4, requires_grad=True)
    out = Oracle(spy, "logits", n=2)(x)
    assert not spy.saw_grad
    assert not out.requires_grad and out.grad_fn is None
    assert all(p.requires_grad for p in spy.parameters()), "the model's parameters are restored afterwards"


def test_bad_arguments_say_what_to_fix(spy):
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="output must be one of"):
        Oracle(spy, "probs", n=2)
    with pytest.raises(ValueError, match="max_queries"):
        Oracle(spy, "labels", n=2, max_queries=0)
    with pytest.raises(ValueError, match="decimals rounds the scores"):
        Oracle(spy, "labels", n=2, decimals=2)
    with pytest.raises(ValueError, match="pass idx="):
        Oracle(spy, "labels", n=3)(x)
    with pytest.raises(ValueError, match="idx must be sample indices"):
        Oracle(spy, "labels", n=2)(x, idx=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="training mode"):
        Oracle(spy.train(), "labels", n=2)
    spy.eval()
    with pytest.raises(ValueError, match="needs an oracle answering scores"):
        as_oracle(Oracle(spy, "labels", n=2), x, torch.tensor([0, 1]), allowed=("scores",), max_queries=None)
    with pytest.raises(ValueError, match="target != y"):
        as_oracle(spy, x, torch.tensor([0, 1]), allowed=("scores",), max_queries=None, target=torch.tensor([0, 2]))


def test_margin_and_result(spy):
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    y = torch.tensor([0, 0])
    m = margin_from_scores(scores, y)
    assert torch.allclose(m, torch.tensor([0.7, 0.1]).log() - torch.tensor([0.2, 0.6]).log())
    t = torch.tensor([1, 2])
    mt = margin_from_scores(scores, y, t)
    assert mt[0] > 0 and mt[1] < 0, "targeted margin is > 0 until the target wins"

    x = torch.rand(2, 1, 4, 4)
    o = Oracle(spy, "labels", n=2, max_queries=1)
    pred = o(x)
    res = finish(o, x, pred.clone(), x, pred, attack="none", params={})
    assert res.queries.tolist() == [1, 1] and not res.success.any()
    assert res.extra["out_of_queries"] == 2 and res.params["max_queries"] == 1


def test_reference_checkpoint_is_verified_and_accurate(staged, mnist_test, monkeypatch):
    from advkit import zoo

    monkeypatch.setenv("ADVKIT_DATA", str(staged))
    model = zoo.reference("model_cnn", device="cpu")
    x, y = mnist_test
    assert zoo.evaluate(model, x[:1000], y[:1000]) > 0.97
    with pytest.raises(ValueError, match="unknown reference model"):
        zoo.reference("resnet")
