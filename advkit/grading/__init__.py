"""Student copies and a grader that survives hostile notebooks.

* :func:`build_student_copy` / :func:`build` (``advkit student build``): solution regions become
  ``NotImplementedError`` stubs, hidden tests go, checks stay, every graded or locked cell keeps
  its id and a checksum in the metadata; the same input gives the same bytes.
* :func:`grade` (``advkit grade``): restores the lab's cells by id, runs the notebook with
  papermill in a sandboxed kernel with limits, and decides every point in the grader's process
  from plain data that the kernel exports (:mod:`advkit.grading.spec`).
"""

from .grader import find_submissions, grade
from .sandbox import Limits
from .spec import Check, Spec, load_spec
from .student import build, build_student_copy

__all__ = ["Check", "Limits", "Spec", "build", "build_student_copy", "find_submissions", "grade", "load_spec"]
