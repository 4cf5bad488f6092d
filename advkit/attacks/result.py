"""What every attack returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..metrics import lp_norm, median


@dataclass
class AttackResult:
    """The outcome of an attack on a batch.

    Attributes
    ----------
    x_adv : Tensor
        Adversarial images, same shape, dtype and device as the input ``x``.
    success : Tensor
        Per-sample bool, judged on the final (possibly rounded) ``x_adv``: the prediction
        differs from ``y`` (untargeted) or equals ``target`` (targeted).
    x : Tensor
        The original images (a reference, not a copy).
    y : Tensor
        The true labels.
    pred : Tensor
        The model's prediction on ``x_adv``.
    target : Tensor or None
        Target labels of a targeted attack.
    attack : str
        Name of the attack, e.g. ``"fgsm"``.
    params : dict
        The hyperparameters it ran with (for tables and records).
    iterations, queries : Tensor or None
        Per-sample iteration / model-query counts where the attack has them.
    extra : dict
        Attack-specific diagnostics (e.g. the number of samples with a zero gradient).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    pred: torch.Tensor
    target: torch.Tensor | None = None
    attack: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    iterations: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def targeted(self) -> bool:
        return self.target is not None

    @property
    def delta(self) -> torch.Tensor:
        """``x_adv - x``."""
        return self.x_adv - self.x

    def norms(self, p: float | str = 2) -> torch.Tensor:
        """Per-sample Lp norm of the perturbation (p in 0, 1, 2, inf)."""
        return lp_norm(self.delta, p)

    @property
    def success_rate(self) -> float:
        """Fraction of samples on which the attack succeeded (exact: 9 of 10 is 0.9, not float32's 0.89999998)."""
        return int(self.success.sum()) / len(self.success) if len(self.success) else float("nan")

    @property
    def robust_accuracy(self) -> float:
        """Fraction of samples still classified as their true label after the attack."""
        return int((self.pred == self.y).sum()) / len(self.y) if len(self.y) else float("nan")

    def __len__(self) -> int:
        return len(self.x_adv)

    def summary(self) -> dict[str, float]:
        """Headline numbers: success rate, robust accuracy, and median L0/L2/Linf of successes
        (:func:`advkit.metrics.median`, the same median as :func:`advkit.robustness.min_norm_stats`)."""
        out = {
            "n": len(self),
            "success_rate": round(self.success_rate, 4),
            "robust_accuracy": round(self.robust_accuracy, 4),
        }
        ok = self.success
        for p, name in ((0, "l0"), (2, "l2"), (float("inf"), "linf")):
            norms = self.norms(p)[ok]
            out[f"median_{name}"] = round(median(norms), 4) if len(norms) else float("nan")
        return out

    def __repr__(self) -> str:
        s = self.summary()
        kind = "targeted" if self.targeted else "untargeted"
        return (f"AttackResult({self.attack or 'attack'}, {kind}, n={s['n']}, "
                f"success={100 * s['success_rate']:.1f}%, robust_acc={100 * s['robust_accuracy']:.1f}%, "
                f"median_l2={s['median_l2']:.3f}, median_linf={s['median_linf']:.3f})")

    @staticmethod
    def cat(results: list[AttackResult]) -> AttackResult:
        """Concatenate results of the same attack on consecutive batches."""
        if not results:
            raise ValueError("need at least one AttackResult to concatenate")

        def join(name: str):
            parts = [getattr(r, name) for r in results]
            return None if any(p is None for p in parts) else torch.cat(parts)

        first = results[0]
        extra = {}
        for k, v in first.extra.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                extra[k] = sum(r.extra.get(k, 0) for r in results)
            elif isinstance(v, torch.Tensor):
                # per-sample tensors are N x ...; histories are T x N (one row per iteration)
                extra[k] = torch.cat([r.extra[k] for r in results], dim=1 if k.endswith("_history") else 0)
            else:
                extra[k] = v
        return AttackResult(
            x_adv=join("x_adv"), success=join("success"), x=join("x"), y=join("y"), pred=join("pred"),
            target=join("target"), attack=first.attack, params=dict(first.params),
            iterations=join("iterations"), queries=join("queries"), extra=extra,
        )
