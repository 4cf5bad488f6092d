"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami, IEEE S&P 2016), and why it only looks robust.

Papernot et al. train a network at a high softmax temperature ``T``, relabel the training set
with its soft labels at ``T``, train a second network (same architecture) on those soft labels
at ``T``, and deploy the second one at ``T = 1``::

    teacher:  minimise  CE( softmax(z_teacher(x) / T), y )                  (T = 100 on MNIST)
    labels:   p(x) = softmax(z_teacher(x) / T)                              (soft labels)
    student:  minimise  - sum_k p_k(x) log softmax(z_student(x) / T)_k
    deploy:   f(x) = z_student(x), i.e. softmax(z_student(x) / 1)

To fit labels at temperature ``T`` the student's logits grow about ``T`` times larger than a
normally trained network's. At ``T = 1`` the softmax then saturates: on most inputs it is exactly
one-hot in float32 (the other classes' ``exp(z_j - z_y)`` underflow), so the cross-entropy's input
gradient ``J^T (softmax - onehot)`` is exactly zero. FGSM and PGD on the cross-entropy have
nothing to follow and "fail" (and :func:`advkit.attacks.core.warn_zero_gradients` says why).
That is gradient masking, not robustness: Carlini & Wagner ("Defensive Distillation is Not
Robust to Adversarial Examples", arXiv 2016; "Towards Evaluating the Robustness of Neural
Networks", IEEE S&P 2017) attack the *logits* with a margin loss (:func:`advkit.attacks.cw_l2`,
or :func:`advkit.attacks.pgd` with ``loss="margin"``) and succeed on essentially every input, at
distortions close to those for the undefended network. Dividing the deployed logits by ``T``
again (:class:`Tempered`) also gives the cross-entropy attacks their gradients back.

The deployed model returns raw logits ``z`` (not probabilities), like every advkit model.

Measured on ``zoo.load("cnn_distilled")`` (T = 100, one epoch each for teacher and student):
98.54% test accuracy; on the first 1000 test images the CE input gradient is exactly zero for
97.8% and the softmax exactly one-hot for 99.8% (median top-2 logit margin 727). On the first
100 test images (all correctly classified) FGSM and PGD-40 on the cross-entropy succeed on 0%
at eps 0.1 and at eps 0.3, whereas :func:`advkit.attacks.cw_l2` with the lab budget
(``learning_rate=0.1, max_iterations=100, binary_search_steps=6, initial_const=1e-2``) succeeds
on 100% at a median L2 of 1.46.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..attacks.checks import check_images, check_labels
from .training import SCHEDULES, lr_at


class Tempered(nn.Module):
    """``model(x) / temperature``: the deployed logits seen at a temperature other than 1.

    ``Tempered(student, 100)`` is the distilled network at its training temperature; its
    softmax is no longer saturated, so cross-entropy attacks get useful gradients again (the
    argmax, hence every decision, is unchanged).
    """

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = float(temperature)
        self.train(model.training)  # same mode as the wrapped model (attacks need eval mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"


def defensive_distillation(
    teacher: nn.Module,
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    temperature: float = 100.0,
    epochs: int = 1,
    teacher_epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 2e-3,
    optimizer: str = "adam",
    lr_schedule: str = "onecycle",
    seed: int = 0,
    progress: bool = True,
):
    """Train ``teacher`` then ``student`` (both in place) by defensive distillation at ``temperature``.

    Parameters
    ----------
    teacher, student : nn.Module
        Freshly initialised networks taking pixels in [0, 1] and returning logits (Papernot et
        al. use the same architecture for both); on the same device.
    x, y : Tensor
        Training images ``N x C x H x W`` in [0, 1] and int64 labels.
    temperature : float, default 100
        ``T`` of ``softmax(z / T)`` for the teacher, the soft labels and the student (Papernot et
        al.'s MNIST value, the one with the lowest FGSM/JSMA success in their Sec. V).
    epochs : int, default 1
        Epochs of the student (and of the teacher unless ``teacher_epochs`` is given). Papernot et
        al. train 50; one epoch each of the CNN already saturates (see the module docstring).
    teacher_epochs : int, optional
        Epochs of the teacher; default ``epochs``.
    batch_size, lr, optimizer, lr_schedule, seed
        As for the zoo's standard training: mini-batches of 128, Adam (``"adam"`` or ``"sgd"``
        with momentum 0.9) with peak rate ``lr`` under ``lr_schedule`` (see
        :func:`advkit.defenses.training.lr_at`), updated per batch; ``seed`` seeds the shuffling.
    progress : bool, default True
        tqdm bars over batches.

    Returns
    -------
    student : nn.Module
        The distilled network in eval mode, deployed at ``T = 1``: it returns the raw logits
        ``z``, whose softmax saturates (see the module docstring).
    history : pandas.DataFrame
        One row per epoch and network: ``network`` ("teacher" or "student"), ``epoch``, ``loss``
        (mean training loss at ``T``), ``train_acc``, ``seconds``.

    Example
    -------
    >>> teacher, student = advkit.models.cnn(), advkit.models.cnn()           # doctest: +SKIP
    >>> student, hist = defensive_distillation(teacher, student, x_train, y_train)  # doctest: +SKIP
    >>> fgsm(student, x, y, eps=0.1).extra["zero_gradient"]                     # doctest: +SKIP
    """
    import pandas as pd

    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    check_images(x)
    check_labels(y, x)
    teacher_epochs = epochs if teacher_epochs is None else teacher_epochs
    for name, value in (("epochs", epochs), ("teacher_epochs", teacher_epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}")
    common = dict(temperature=float(temperature), batch_size=batch_size, lr=lr, optimizer=optimizer,
                  lr_schedule=lr_schedule, progress=progress)

    rows = _fit(teacher, x, y, epochs=teacher_epochs, name="teacher", seed=seed, **common)
    soft = soft_labels(teacher, x, temperature=temperature)
    rows += _fit(student, x, soft, epochs=epochs, name="student", seed=seed + 1, **common)
    return student.eval(), pd.DataFrame(rows)


@torch.no_grad()
def soft_labels(model: nn.Module, x: torch.Tensor, *, temperature: float, batch_size: int = 1000) -> torch.Tensor:
    """``softmax(model(x) / temperature)`` in batches (model in eval mode), on ``x``'s device."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([F.softmax(model(x[i:i + batch_size].to(device)) / temperature, dim=1).to(x.device)
                     for i in range(0, len(x), batch_size)])
    model.train(was)
    return out


def softmax_saturation(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """How saturated ``model``'s softmax is on ``(x, y)``: the diagnostics of gradient masking by distillation.

    Returns ``zero_gradient`` (fraction of samples whose cross-entropy input gradient is exactly
    zero: FGSM and PGD cannot move them), ``one_hot`` (fraction whose float32 softmax is exactly
    one-hot), ``median_margin`` (median over samples of the top logit minus the runner-up) and
    ``median_max_abs_logit``.
    """
    if model.training:
        raise ValueError("model is in training mode; call model.eval() first")
    xg = x.detach().clone().requires_grad_(True)
    logits = model(xg)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xg)
    z = logits.detach()
    probs = F.softmax(z, dim=1)
    top2 = z.topk(2, dim=1).values
    return {
        "zero_gradient": (grad.flatten(1).abs().amax(1) == 0).float().mean().item(),
        "one_hot": (probs.amax(1) == 1).float().mean().item(),
        "median_margin": (top2[:, 0] - top2[:, 1]).median().item(),
        "median_max_abs_logit": z.abs().amax(1).median().item(),
    }


def _fit(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, temperature: float, epochs: int,
         batch_size: int, lr: float, optimizer: str, lr_schedule: str, seed: int, name: str,
         progress: bool) -> list[dict[str, Any]]:
    """Train on ``CE(softmax(z / T), target)``; ``target`` is int labels or soft labels ``N x K``."""
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    per_epoch = (len(x) + batch_size - 1) // batch_size
    total, done, rows = epochs * per_epoch, 0, []
    soft = target.is_floating_point()
    model.train()
    bar = tqdm(total=total, desc=f"distillation: {name} at T={temperature:g}", disable=not progress,
               unit="batch", leave=False)
    tic = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        run_loss = run_correct = 0.0
        for i in range(per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, tb = x[idx].to(device), target[idx].to(device)
            for group in opt.param_groups:
                group["lr"] = lr_at(lr_schedule, done / total, lr)
            logits = model(xb) / temperature
            if soft:
                loss = -(tb * F.log_softmax(logits, dim=1)).sum(1).mean()
                labels = tb.argmax(1)
            else:
                loss = F.cross_entropy(logits, tb)
                labels = tb
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            run_loss += loss.item() * len(xb)
            run_correct += (logits.detach().argmax(1) == labels).sum().item()
            bar.update()
        rows.append({"network": name, "epoch": epoch + 1, "loss": run_loss / len(x),
                     "train_acc": run_correct / len(x), "seconds": time.perf_counter() - tic})
    bar.close()
    model.eval()
    return rows
