"""advkit: a lab course on adversarial examples, backed by a small, fast PyTorch library.

Subpackages: :mod:`advkit.data`, :mod:`advkit.models`, :mod:`advkit.zoo`,
:mod:`advkit.attacks`, :mod:`advkit.metrics`, :mod:`advkit.viz`, :mod:`advkit.lab`.
"""

__version__ = "0.1.0"
