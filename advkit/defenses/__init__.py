"""Defenses, each evaluated honestly: adversarial training, distillation, input transformations,
output-side defenses and detectors.

Every defense here comes with the attack that breaks it or fails to (adaptive attacks: BPDA for
non-differentiable transforms, EOT for randomised ones, C&W on the logits for distillation,
label-only attacks against output-side defenses), and :func:`advkit.evaluation.audit` checks an
evaluation for the classic signs of gradient masking.
"""

__all__: list[str] = []

# defense modules (one per family) register below
from .bpda import BPDA, Defended, preprocess, straight_through  # noqa: E402
__all__ += ["BPDA", "Defended", "preprocess", "straight_through"]
from .masking import InputStaircase, Staircase, StaircaseModel, staircase_activations  # noqa: E402
__all__ += ["InputStaircase", "Staircase", "StaircaseModel", "staircase_activations"]
from .transforms import TRANSFORMS, JPEG, TVM, BitDepth, GaussianBlur, GaussianNoise, MedianSmoothing, RandomMirror, RandomRotate, RandomTranslate, ThermometerEncoding, ThermometerModel, thermometer_encode, thermometer_soft, tv_minimize  # noqa: E402
__all__ += ["TRANSFORMS", "JPEG", "TVM", "BitDepth", "GaussianBlur", "GaussianNoise", "MedianSmoothing", "RandomMirror", "RandomRotate", "RandomTranslate", "ThermometerEncoding", "ThermometerModel", "thermometer_encode", "thermometer_soft", "tv_minimize"]
from .output import DEFENSES, defended_oracle, one_hot_scores, reverse_sigmoid, round_scores  # noqa: E402
__all__ += ["DEFENSES", "defended_oracle", "one_hot_scores", "reverse_sigmoid", "round_scores"]
from .detection import DeepKNN, FeatureSqueezing, auc, detection_at_fpr, dknn_adaptive_attack, knn, load_mlp_64_64, mlp_64_64, roc_auc, roc_curve, squeeze_adaptive_attack, threshold_at_fpr  # noqa: E402
__all__ += ["DeepKNN", "FeatureSqueezing", "auc", "detection_at_fpr", "dknn_adaptive_attack", "knn", "load_mlp_64_64", "mlp_64_64", "roc_auc", "roc_curve", "squeeze_adaptive_attack", "threshold_at_fpr"]
from .scoreboard import Defense, scoreboard  # noqa: E402
__all__ += ["Defense", "scoreboard"]
from .training import adversarial_train, capacity_sweep, catastrophic_overfitting, evaluate_robustness, resolve_method, sweep, training_perturbation, weight_decay_curve, weight_decay_summary, weight_decay_sweep  # noqa: E402
__all__ += ["adversarial_train", "capacity_sweep", "catastrophic_overfitting", "evaluate_robustness", "resolve_method", "sweep", "training_perturbation", "weight_decay_curve", "weight_decay_summary", "weight_decay_sweep"]
from .distillation import Tempered, defensive_distillation, soft_labels, softmax_saturation  # noqa: E402
__all__ += ["Tempered", "defensive_distillation", "soft_labels", "softmax_saturation"]
