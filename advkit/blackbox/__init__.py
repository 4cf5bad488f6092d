"""Black-box attacks under an enforced threat model.

A black-box attacker sees labels or scores, and pays for every question. Every attack here
talks to the model only through an :class:`Oracle` (see :mod:`advkit.blackbox.oracle`), which
answers what the threat model allows, counts queries per sample, enforces ``max_queries`` and
never lets a gradient through. The public functions keep the library's calling convention,
``attack(model, x, y, *, ..., target=None) -> AttackResult``, and wrap ``model`` themselves;
``result.queries`` is the oracle's count.
"""

from .oracle import OUTPUTS, Oracle, QueryBudgetExceeded, as_oracle, finish, margin_from_scores

__all__ = ["OUTPUTS", "Oracle", "QueryBudgetExceeded", "as_oracle", "finish", "margin_from_scores"]

# attack modules (one per family) register below
from .square import square  # noqa: E402
__all__ += ["square"]
from .decision import boundary, hop_skip_jump  # noqa: E402
__all__ += ["boundary", "hop_skip_jump"]
from .zoo_attack import fd_gradient, zoo  # noqa: E402
from .pixel import pixel  # noqa: E402
__all__ += ["fd_gradient", "zoo", "pixel"]
from .substitute import seed_set, small_cnn, substitute, transfer_rates  # noqa: E402
from .universal import fooling_rate, random_fooling_rate, universal  # noqa: E402
from .eot import RandomizedModel, eot, random_transform, success_under_transforms  # noqa: E402
from .transfer import Ensemble, transfer_matrix  # noqa: E402
__all__ += ["seed_set", "small_cnn", "substitute", "transfer_rates", "fooling_rate", "random_fooling_rate",
            "universal", "RandomizedModel", "eot", "random_transform", "success_under_transforms", "Ensemble",
            "transfer_matrix"]
from .substitute import jacobian_augmentation  # noqa: E402
__all__ += ["jacobian_augmentation"]
