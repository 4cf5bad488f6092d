"""The real labs' grading specs (labs/grading/*.py): each lab graded end to end through
``advkit grade LAB ... --workers 2``, where the instructor notebook scores full marks and the
student copy 0, and each new spec's grade functions shown to take points from a wrong answer.

(tests/test_grader.py grades lab 04 end to end, and the hostile and broken submissions.)
"""

from __future__ import annotations

import ast
import csv
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pytest

from advkit.grading import build_student_copy
from advkit.grading.spec import load_spec, seed_for, spec_path

ROOT = Path(__file__).resolve().parents[1]
LABS = ROOT / "labs"
GRADED = ["00_taxonomy", "01_fgsm", "02_pgd", "03_optimization_attacks", "05_blackbox", "06_defenses",
          "07_common_perturbations", "08_thesis_reproduction"]


@pytest.mark.parametrize("lab", GRADED)
def test_instructor_full_marks_student_copy_zero(lab, tmp_path, staged):
    source = LABS / f"{lab}.ipynb"
    spec, _ = load_spec(source)
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(source, subs / "solved.ipynb")
    shutil.copy(build_student_copy(source, tmp_path / "student"), subs / "empty.ipynb")
    r = subprocess.run([sys.executable, "-m", "advkit.cli", "grade", lab, str(subs), "--out", str(tmp_path / "out"),
                        "--workers", "2"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "out" / "gradebook.csv") as f:
        table = list(csv.reader(f))
    names = [c.name for c in spec.checks]
    assert table[0] == ["submission", "status", "points", "max_points", *names]
    rows = {row[0]: row for row in table[1:]}
    full = [f"{c.points:g}" for c in spec.checks]
    total = f"{spec.max_points:g}"
    feedback = lambda name: (tmp_path / "out" / "feedback" / f"{name}.md").read_text()
    assert rows["solved.ipynb"] == ["solved.ipynb", "graded", total, total, *full], feedback("solved")
    assert rows["empty.ipynb"] == ["empty.ipynb", "graded", "0", total, *["0"] * len(names)], feedback("empty")
    assert "NotImplementedError" in feedback("empty")


def _defaults(lab: str) -> dict:
    import papermill as pm

    return {k: ast.literal_eval(v["default"]) for k, v in pm.inspect_notebook(str(LABS / f"{lab}.ipynb")).items()
            if k != "device"}


def _spec_module(lab: str) -> dict:
    ns: dict = {}
    exec(compile(spec_path(LABS / f"{lab}.ipynb").read_text(), lab, "exec"), ns)
    return ns


@pytest.mark.parametrize("lab, constants", [
    ("02_pgd", {"N_LOSS": "n_loss", "EPS_MAIN": "eps_main", "EPS_STEP": "eps_step", "MAX_ITER": "max_iter"}),
    ("03_optimization_attacks", {"N_IMAGES": "n_images", "CW_ITERATIONS": "cw_iterations", "CW_LR": "cw_lr",
                                 "CONST_GRID": "const_grid"}),
    ("06_defenses", {"ADV_NAME": "adv_name", "EPS": "eps", "WIDTHS": "widths",
                     "N_SWEEP": "n_sweep", "SWEEP_EPOCHS": "sweep_epochs"}),
    ("08_thesis_reproduction", {"SCALE": "scale", "DATASETS": "datasets", "SETTINGS": "settings"}),
])
def test_recomputed_state_uses_the_grading_parameters(lab, constants):
    """Exercises graded on the lab's state are recomputed by the grader with constants that
    must be the parameters the kernel runs with (the lab's defaults, updated by the profile);
    lab 06's and lab 08's graders warm the model cache with them (the kernel's cache is read-only)."""
    import advkit.lab

    params = _defaults(lab) | advkit.lab.load_profile("grading", lab, LABS)
    assert params.get("device", "cpu") == "cpu"
    ns = _spec_module(lab)
    for const, param in constants.items():
        value = ns[const]
        assert (list(value) if isinstance(value, tuple) else value) == params[param], (const, param)


# in-process grading of one exercise: the kernel's export code called on the instructor's solution
# cell (or a wrong version of it), the result graded by the spec's grade function
PRELUDE = "import math\nimport torch\nfrom torch.nn import functional as F\nfrom advkit.blackbox import margin_from_scores\n"
# names a solution cell uses from the lab's earlier cells (lab 07's picks its digit from section 6)
LAB_PRELUDE = {"07_common_perturbations": """
import types
import advkit.perturbations as P
import advkit.zoo
lenet = advkit.zoo.load("lenet5", device="cpu", progress=False)
xsp, ysp = torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long)
grid_rot = types.SimpleNamespace(success=torch.zeros(1, dtype=torch.bool))
"""}


def _grade(lab: str, check_name: str, replace: tuple[tuple[str, str], ...] = ()) -> tuple[float, str]:
    source = LABS / f"{lab}.ipynb"
    spec, _ = load_spec(source)
    check = next(c for c in spec.checks if c.name == check_name)
    nb = nbformat.read(str(source), as_version=4)
    inputs = {k: np.asarray(v) for k, v in spec.inputs(np.random.default_rng(seed_for(lab))).items()}
    ns: dict = {}
    exec(PRELUDE + LAB_PRELUDE.get(lab, ""), ns)
    for cell_id in check.cells:
        src = next(c.source for c in nb.cells if c.id == cell_id)
        for old, new in replace:
            assert old in src, f"{old!r} is not in cell {cell_id} of {lab}"
            src = src.replace(old, new)
        exec(src, ns)
    exec("def _export(inputs):\n" + textwrap.indent(check.export.strip("\n"), "    "), ns)
    got = ns["_export"]({k: v.copy() for k, v in inputs.items()})
    got = {k: np.asarray(v.detach().numpy() if hasattr(v, "detach") else v) for k, v in got.items()}
    return check.grade(got, inputs)


WRONG = [   # (lab, check, edits of the solution, the fraction of the points it keeps, a phrase of the message)
    ("02_pgd", "ex1_my_pgd_linf_step", (("x + alpha * grad.sign()", "x - alpha * grad.sign()"),), 0.0,
     "of the pixels differ from advkit's PGD"),
    ("02_pgd", "ex1_my_pgd_linf_step", (("(x_t.detach() - x", "(x_t - x"), (".clamp(0, 1).detach()", ".clamp(0, 1)")),
     0.0, ".detach()"),
    ("02_pgd", "ex2_my_project_l2", ((".clamp(max=1.0)", ""),), 0.0, "must not move"),
    ("03_optimization_attacks", "ex1_cw_loss", (("other - own if targeted else own - other", "own - other"),), 0.5,
     "targeted: κ=0"),
    ("03_optimization_attacks", "ex2_tanh_space", (("* (1 - 1e-6)", ""),), 0.5, "must be finite"),
    ("05_blackbox", "ex1_my_augmentation", (("x.detach() + lam", "x.detach() - lam"),), 0.0,
     "differ from jacobian_augmentation"),
    ("05_blackbox", "ex1_my_augmentation", (("    net.eval()\n", ""),), 0.8, "put the net in eval mode"),
    ("05_blackbox", "ex2_my_fd_gradient", (("/ (2 * h)", "/ h"),), 0.0, "relative error"),
    # lab 06: alpha and 1 - alpha swapped is still right at alpha = 0.5 (one case of four)
    ("06_defenses", "ex1_my_fgsm_loss", (("alpha * F.cross_entropy(model(x), y) + (1 - alpha)",
                                          "(1 - alpha) * F.cross_entropy(model(x), y) + alpha"),), 0.25,
     "ε=0.1, α=0: loss"),
    # ... and a step down the gradient is still right at alpha = 1 (the clean loss only)
    ("06_defenses", "ex1_my_fgsm_loss", (("x.detach() + eps", "x.detach() - eps"),), 0.25, "expected"),
    ("06_defenses", "ex2_my_bpda", (("x + (transform(x) - x).detach()", "x + (transform(x) - x)"),), 0.0,
     "the gradient is not the identity's"),
    ("06_defenses", "ex2_my_bpda", (("x + (transform(x) - x).detach()", "x + transform(x).detach()"),), 0.0,
     "the value differs from transform(x)"),
    ("07_common_perturbations", "ex1_my_brightness", (("z = x.clamp(eps, 1 - eps)", "z = x"),), 0.8,
     "clamp x to [1e-7, 1 - 1e-7]"),
    ("07_common_perturbations", "ex1_my_brightness", (("torch.log(z / (1 - z)) + ", "torch.log(z / (1 - z)) - "),),
     0.2, "work in logit space"),
    # lab 07: an index for an angle is right on the lab's grid -30..30 only; a global model on LeNet-5 only
    ("07_common_perturbations", "ex2_worst_rotation", (("float(angles[loss.argmax()])", "float(loss.argmax() - 30)"),),
     0.5, "unsorted non-integer angles"),
    ("07_common_perturbations", "ex2_worst_rotation", (("model(batch)", "lenet(batch)"),), 0.5, "cnn, the angles"),
    # lab 08: a z fixed inside the function is right at the default z only; Wald's half-width is wrong everywhere
    ("08_thesis_reproduction", "ex1_my_wilson", (("    p = k / n\n", "    p = k / n\n    z = 1.959964\n"),), 2 / 3,
     "another z: "),
    ("08_thesis_reproduction", "ex1_my_wilson", ((" + z * z / (4 * n * n))", ")"),), 0.0, "k = 0 and k = n: "),
    ("08_thesis_reproduction", "ex2_mean_true_prob", (("return float(", "return ("),), 0.8, "return a Python float"),
    ("08_thesis_reproduction", "ex2_mean_true_prob", (("softmax(1)", "softmax(0)"),), 0.0, "1 image, 10 classes"),
    # ... half a unit of 2 decimals whatever decimals says; the right n as a float
    ("08_thesis_reproduction", "ex3_min_images", (("0.5 * 10 ** -decimals", "0.005"),), 0.5, "other decimals: "),
    ("08_thesis_reproduction", "ex3_min_images", (("return n\n", "return float(n)\n"),), 0.75, "return a Python int"),
]


@pytest.mark.parametrize("lab, check, edits, kept, phrase", WRONG,
                         ids=[f"{w[0][:2]}-{w[1]}-{i}" for i, w in enumerate(WRONG)])
def test_wrong_answer_loses_points(lab, check, edits, kept, phrase, staged):
    assert _grade(lab, check) == (1.0, "correct")
    frac, msg = _grade(lab, check, edits)
    assert frac == pytest.approx(kept) and phrase in msg, msg


def test_state_exercises_graded_against_the_graders_recomputation(staged):
    """Lab 02 exercise 3 and lab 03 exercise 3: the grader's own PGD / C&W runs are the reference."""
    ns2 = _spec_module("02_pgd")
    same, fractions = ns2["_ex3_reference"]()
    assert same is True and fractions[0.25] > 0.999 > fractions[0.01]     # the lab's visible claims
    alphas = np.array(sorted(fractions))
    right = {"same": np.array(1.0), "alphas": alphas, "fractions": np.array([fractions[a] for a in alphas])}
    assert ns2["grade_ex3"](right, {}) == (1.0, "correct")
    wrong = dict(right, same=np.array(0.0), fractions=right["fractions"] - np.array([0, 0, 0.01]))
    frac, msg = ns2["grade_ex3"](wrong, {})
    assert frac == pytest.approx(0.5) and "same_as_fgsm should be True" in msg and "α=0.25" in msg

    ns3 = _spec_module("03_optimization_attacks")
    runs = ns3["_ex3_reference"]()
    c = ns3["CONST_GRID"]
    right = lambda k: {"c_pick": np.array(c[k]), "l2_pick": np.array(runs[k][1])}
    strict = next(i for i, (s, _) in enumerate(runs) if s >= 0.9)            # as the lab's solution reads it
    exact = next(i for i, (s, _) in enumerate(runs) if s >= 0.9 - 1e-6)      # 9 of 10 counted as 90%
    assert 0 < exact <= strict and runs[0][0] < 0.5                          # not the first c of the grid
    assert ns3["grade_ex3"](right(strict), {}) == ns3["grade_ex3"](right(exact), {}) == (1.0, "correct")
    frac, msg = ns3["grade_ex3"](right(exact - 1), {})
    assert frac == 0.0 and f"is {c[exact]:g}" in msg
    frac, msg = ns3["grade_ex3"](dict(right(strict), l2_pick=np.array(runs[strict][1] * 1.01)), {})
    assert frac == 0.5 and "l2_pick" in msg
