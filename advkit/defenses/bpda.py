"""BPDA: attack through a non-differentiable preprocessing defense.

Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security: Circumventing
Defenses to Adversarial Examples", ICML 2018, Sec. 4.1. A defense ``model(g(x))`` whose
preprocessing ``g`` has no useful gradient (JPEG, bit-depth reduction, quantisation, total-variance
minimisation, thermometer encoding) looks robust to gradient attacks only because the gradient is
zero or missing. *Backward Pass Differentiable Approximation* keeps the real ``g`` in the forward
pass and differentiates a smooth ``a(x) ~ g(x)`` in the backward pass::

    forward:   y = g(x)                          (the real, non-differentiable transform)
    backward:  dL/dx = (d a / d x)^T  dL/dy      (a = identity: dL/dx = dL/dy)

With ``a`` the identity (the paper's choice whenever ``g(x) ~ x``) the attacker gets the
gradient of the model at ``g(x)``: ``grad_x L(f(g(x))) ~ grad L(f)(g(x))``. PGD on
``preprocess(model, g, bpda=True)`` then attacks the defense as deployed, because success is
judged on the real forward pass.

==============================  ===================================================================
``BPDA(g, approx=None)``        module: forward ``g``, backward through ``approx`` (identity if None)
``Defended(model, g)``          module: ``model(g(x))``; ``bpda=True`` wraps ``g`` in ``BPDA``
``preprocess(model, g, ...)``   the same as a function
``straight_through(g, x)``      functional BPDA for one call
==============================  ===================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Transform = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    """``a(x) = x``: BPDA's default approximation (its backward pass is the identity)."""
    return x


class _BPDAFunction(torch.autograd.Function):
    """Forward: ``transform(x)`` without a graph. Backward: the vector-Jacobian product of ``approx``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, transform: Transform, approx: Transform | None) -> torch.Tensor:
        with torch.no_grad():
            out = transform(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the transform must return a tensor, got {type(out).__name__}")
        if approx is None and out.shape != x.shape:
            raise ValueError(f"the transform maps {tuple(x.shape)} to {tuple(out.shape)}, so the identity "
                             "cannot be its backward pass; give BPDA an approx with the same output shape")
        ctx.approx = approx
        if approx is not None:
            ctx.save_for_backward(x)
        return out.detach()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if ctx.approx is None:
            return grad_out, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            a = ctx.approx(xd)
            if a.shape != grad_out.shape:
                raise ValueError(f"approx returns shape {tuple(a.shape)} but the transform returned "
                                 f"{tuple(grad_out.shape)}; they must agree")
            (g,) = torch.autograd.grad(a, xd, grad_out, allow_unused=True)
        return (torch.zeros_like(x) if g is None else g), None, None


def straight_through(transform: Transform, x: torch.Tensor, approx: Transform | None = None) -> torch.Tensor:
    """``transform(x)`` in the forward pass, the gradient of ``approx`` (identity if None) in the backward pass.

    Example
    -------
    >>> y = straight_through(torch.round, x)   # round forward, identity backward   # doctest: +SKIP
    """
    return _BPDAFunction.apply(x, transform, approx)


class BPDA(nn.Module):
    """Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, ICML 2018).

    ``BPDA(g, approx=a)(x)`` returns exactly ``g(x)`` (computed without autograd), and its
    backward pass is that of ``a``: ``dL/dx = J_a(x)^T dL/dg``.

    Parameters
    ----------
    transform : callable
        The real (possibly non-differentiable, possibly random) transform ``g``, tensor to tensor.
    approx : callable, optional
        A differentiable ``a`` with ``a(x) ~ g(x)`` and the same output shape. Default: the
        identity (then ``g`` must keep the shape of ``x``), which the paper uses for JPEG,
        bit-depth reduction, quilting and TV minimisation. For thermometer encoding the
        approximation is the linear ramp (:func:`advkit.defenses.transforms.thermometer_soft`).

    Example
    -------
    >>> from advkit.defenses.transforms import JPEG
    >>> bpda_jpeg = BPDA(JPEG(quality=75))            # forward: the real codec; backward: identity
    >>> res = pgd(nn.Sequential(bpda_jpeg, model), x, y, eps=0.3)            # doctest: +SKIP
    """

    def __init__(self, transform: Transform, approx: Transform | None = None):
        super().__init__()
        if not callable(transform):
            raise TypeError(f"transform must be callable (tensor -> tensor), got {type(transform).__name__}")
        if approx is not None and not callable(approx):
            raise TypeError(f"approx must be callable or None (identity), got {type(approx).__name__}")
        self.transform = transform
        self.approx = None if approx is identity else approx

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``transform(x, *args, **kwargs)`` forward (e.g. a generator for the EOT protocol
        ``t(x, generator)``), ``approx(x)``'s gradient backward."""
        fn = (lambda z: self.transform(z, *args, **kwargs)) if args or kwargs else self.transform
        return _BPDAFunction.apply(x, fn, self.approx)

    def extra_repr(self) -> str:
        a = "identity" if self.approx is None else getattr(self.approx, "__name__", type(self.approx).__name__)
        return f"approx={a}"


class Defended(nn.Module):
    """A preprocessing defense: ``model(transform(x))``, optionally with BPDA on the transform.

    ``bpda=False`` is the defense as deployed: a gradient attack differentiates through
    ``transform`` as it is (zero gradient for bit-depth reduction and JPEG, whose outputs are
    piecewise constant in ``x``; the transform's own gradient for differentiable ones).
    ``bpda=True`` keeps the same forward pass but back-propagates through ``approx`` (the
    identity by default): the adaptive attacker's view of the same model.

    The wrapper takes the model's train/eval mode, so an eval-mode model gives an eval-mode
    defense (attacks refuse models in training mode).

    Parameters
    ----------
    model : nn.Module
        The classifier, taking the transform's output.
    transform : callable
        Tensor to tensor, e.g. an instance from :mod:`advkit.defenses.transforms`.
    bpda : bool, default False
        Wrap ``transform`` in :class:`BPDA`.
    approx : callable, optional
        BPDA's backward approximation (default identity). Only with ``bpda=True``.

    Example
    -------
    >>> from advkit.defenses.transforms import BitDepth
    >>> deployed = Defended(model, BitDepth(bits=2))              # PGD sees a zero gradient
    >>> adaptive = Defended(model, BitDepth(bits=2), bpda=True)   # same predictions, useful gradient
    >>> # LeNet-5, 100 MNIST test digits, PGD-20 with eps_step = eps / 8 (measured):
    >>> pgd(deployed, x, y, eps=0.3, eps_step=0.0375, max_iter=20).robust_accuracy  # doctest: +SKIP
    1.0
    >>> pgd(adaptive, x, y, eps=0.3, eps_step=0.0375, max_iter=20).robust_accuracy  # doctest: +SKIP
    0.0
    """

    def __init__(self, model: nn.Module, transform: Transform, *, bpda: bool = False,
                 approx: Transform | None = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(transform):
            raise TypeError(f"transform must be callable (tensor -> tensor), got {type(transform).__name__}")
        if approx is not None and not bpda:
            raise ValueError("approx is BPDA's backward pass; pass bpda=True to use it")
        self.model = model
        self.bpda = bool(bpda)
        self.transform = BPDA(transform, approx) if bpda else transform
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))

    @property
    def base_transform(self) -> Transform:
        """The transform itself (without the BPDA wrapper)."""
        return self.transform.transform if self.bpda else self.transform

    def with_bpda(self, approx: Transform | None = None) -> Defended:
        """The same defense (same model and transform objects) with BPDA on the transform."""
        return Defended(self.model, self.base_transform, bpda=True, approx=approx)

    def extra_repr(self) -> str:
        return f"bpda={self.bpda}"


def preprocess(model: nn.Module, transform: Transform, *, bpda: bool = False,
               approx: Transform | None = None) -> Defended:
    """Put ``transform`` in front of ``model``: ``Defended(model, transform, bpda=bpda, approx=approx)``.

    Example
    -------
    >>> from advkit.defenses.transforms import JPEG
    >>> res = pgd(preprocess(model, JPEG(quality=75), bpda=True), x, y, eps=0.3)   # doctest: +SKIP
    """
    return Defended(model, transform, bpda=bpda, approx=approx)
