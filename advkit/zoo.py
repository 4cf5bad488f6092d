"""Train-or-load: every lab asks for a model by its training recipe and gets it from the cache.

The weights are cached under ``<cache_dir>/models/`` in a file named after the architecture,
the dataset and a hash of the whole training configuration, so that a lab never waits for a
model an earlier lab (or an earlier run) already trained, and a changed recipe never loads
stale weights.

Example
-------
>>> from advkit import zoo
>>> model = zoo.load("lenet5")            # trains once (about a minute on 2 CPU cores)
>>> model.zoo_record["test_accuracy"]      # doctest: +SKIP
0.988
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import models, paths
from .data import mnist
from .devices import resolve_device

#: Default recipes, chosen so that the MNIST models reach >= 98.5% test accuracy on a 2-core
#: CPU in under a minute each (measured figures are in the README).
DEFAULT_RECIPES: dict[str, dict[str, Any]] = {
    "lenet5": dict(epochs=2, batch_size=64, lr=2e-3),
    "fc500_150_10": dict(epochs=5, batch_size=128, lr=2e-3),
    "cnn": dict(epochs=1, batch_size=128, lr=2e-3),
}

_DATASETS = {"mnist": mnist}


@dataclass(frozen=True)
class Recipe:
    """A full training configuration; its hash names the cached weights."""

    arch: str
    dataset: str = "mnist"
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def path(self) -> Path:
        return paths.cache_dir() / "models" / f"{self.arch}-{self.dataset}-{self.key()}.pt"


def recipe(arch: str, dataset: str = "mnist", **overrides: Any) -> Recipe:
    """The default :class:`Recipe` for ``arch`` with ``overrides`` applied."""
    if arch not in models.ARCHITECTURES:
        raise ValueError(f"unknown model {arch!r}; choose one of {sorted(models.ARCHITECTURES)}")
    if dataset not in _DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {sorted(_DATASETS)}")
    settings = {**DEFAULT_RECIPES.get(arch, {}), **overrides}
    unknown = set(settings) - {f for f in Recipe.__dataclass_fields__ if f not in ("arch", "dataset")}
    if unknown:
        raise TypeError(f"unknown training settings {sorted(unknown)} for {arch}")
    return Recipe(arch=arch, dataset=dataset, **settings)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy of ``model`` on ``(x, y)``, in batches, on the model's device."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == y[i : i + batch_size]).sum().item()
    return correct / len(x)


def train(r: Recipe, *, device: str | torch.device = "auto", progress: bool = True) -> nn.Module:
    """Train a model from scratch following ``r``; returns it in eval mode (not cached)."""
    device = resolve_device(device)
    torch.manual_seed(r.seed)  # weight initialisation
    model = models.build(r.arch, **r.model_kwargs).to(device)
    x, y = _DATASETS[r.dataset]("train").tensors
    if r.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=r.lr)
    elif r.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=0.9)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {r.optimizer!r}")
    steps_per_epoch = (len(x) + r.batch_size - 1) // r.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=r.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(r.seed)
    model.train()
    bar = tqdm(total=r.epochs * steps_per_epoch, desc=f"training {r.arch} on {r.dataset}",
               disable=not progress, unit="batch")
    for _ in range(r.epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * r.batch_size : (i + 1) * r.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            if i % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


def load(
    arch: str,
    dataset: str = "mnist",
    *,
    device: str | torch.device = "auto",
    retrain: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> nn.Module:
    """A trained model: loaded from the cache, or trained and cached on first use.

    Parameters
    ----------
    arch : str
        One of :data:`advkit.models.ARCHITECTURES` (``"lenet5"``, ``"cnn"``, ...).
    dataset : str
        Training set (``"mnist"``).
    device : str or torch.device
        ``"auto"`` picks CUDA when available.
    retrain : bool
        Ignore the cache and train again (the new weights replace the cached ones).
    progress : bool
        Show a tqdm bar while training.
    **overrides
        Training settings that differ from :data:`DEFAULT_RECIPES` (``epochs``, ``lr``,
        ``batch_size``, ``seed``, ``optimizer``, ``model_kwargs``); they change the cache key.

    Returns
    -------
    nn.Module
        In eval mode on ``device``. ``model.zoo_record`` holds the recipe, the test accuracy,
        the training time and the weight file.
    """
    r = recipe(arch, dataset, **overrides)
    device = resolve_device(device)
    path = r.path()
    if path.exists() and not retrain:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = models.build(r.arch, **r.model_kwargs)
        model.load_state_dict(saved["state_dict"])
        model = model.to(device).eval()
        record = saved["record"]
    else:
        start = time.perf_counter()
        model = train(r, device=device, progress=progress)
        seconds = time.perf_counter() - start
        x_test, y_test = _DATASETS[r.dataset]("test").tensors
        record = {
            "recipe": asdict(r),
            "test_accuracy": evaluate(model, x_test, y_test),
            "train_seconds": round(seconds, 1),
            "device": str(device),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"state_dict": model.state_dict(), "record": record}, tmp)
        os.replace(tmp, path)  # atomic: a crash never leaves half a checkpoint
    model.zoo_record = {**record, "path": str(path)}
    return model


#: The Kolter & Madry tutorial's chapter-4 MNIST checkpoints (models advkit did not train), staged
#: under ``$ADVKIT_DATA/reference/kolter-madry-ch4/``: file name -> (sha256, stride-2 convolutions).
REFERENCE_MODELS: dict[str, tuple[str, tuple[int, int]]] = {
    "model_cnn": ("7e89b929939b49ff9672a474e46902383a91e3bf75dba48786f416af0cae7015", (1, 3)),
    "model_cnn_robust": ("c3c1785145ca83f9489fe0a16347a490ab852c619a4ef662af49e8781ad6d8ec", (1, 3)),
    "model_cnn_robust_2": ("b506e0eb2deb795f94f77e1fe3d1eae6884cc63c4c6eb81b9c12c9c77e1daeb7", (0, 3)),
}


def reference(name: str = "model_cnn", *, device: str | torch.device = "auto") -> nn.Module:
    """A published checkpoint that advkit did not train, for checks against an outside model.

    ``name`` is one of :data:`REFERENCE_MODELS`: the Kolter & Madry tutorial's standard CNN
    (``"model_cnn"``), its PGD-trained CNN at eps 0.1 (``"model_cnn_robust"``) and its
    interval-bound-trained CNN (``"model_cnn_robust_2"``, stride 2 on the first convolution).
    The file is looked up in ``$ADVKIT_DATA/reference/kolter-madry-ch4/`` and its sha256 is
    verified. The tutorial feeds raw [0, 1] pixels, so the model has no normalisation layer.
    """
    import hashlib as _hashlib

    if name not in REFERENCE_MODELS:
        raise ValueError(f"unknown reference model {name!r}; choose one of {sorted(REFERENCE_MODELS)}")
    sha, strides = REFERENCE_MODELS[name]
    path = paths.data_dir() / "reference" / "kolter-madry-ch4" / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"reference checkpoint {path} not found; set ADVKIT_DATA to the folder holding "
            "reference/kolter-madry-ch4/ (the tutorial's adversarial_training/*.pt files)")
    digest = _hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha:
        raise ValueError(f"{path} has sha256 {digest}, expected {sha}: the file is not the published checkpoint")
    model = models.cnn(normalize=False)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    for i, conv in enumerate(convs):
        conv.stride = (2, 2) if i in strides else (1, 1)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model = model.to(resolve_device(device)).eval()
    model.zoo_record = {"reference": name, "path": str(path), "sha256": sha}
    return model
