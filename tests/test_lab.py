"""Lab plumbing: seeding, records, profiles, and the papermill runner behind `advkit labs run`."""

from __future__ import annotations

import io
import json
import random

import nbformat
import numpy as np
import pytest
import torch

from advkit import cli, lab


def test_setup_seeds_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_RECORDS", str(tmp_path))
    lab.setup("t", seed=7, device="cpu")
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    lab.setup("t", seed=7, device="cpu")
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())
    with pytest.raises(ValueError, match="non-negative int"):
        lab.setup("t", seed=-1)


def test_record_writes_json_and_a_rerun_starts_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_RECORDS", str(tmp_path))
    run = lab.setup("02_x", seed=0, device="cpu")
    assert run.record("acc", torch.tensor(0.5)) is not None
    lab.record("curve", [torch.tensor(1.0), np.float32(0.25)])
    lab.record("nan", float("nan"))
    doc = json.loads((tmp_path / "02_x.json").read_text())
    assert doc["records"] == {"acc": 0.5, "curve": [1.0, 0.25], "nan": None}
    assert doc["lab"] == "02_x" and doc["seed"] == 0
    lab.setup("02_x", seed=0, device="cpu")
    assert json.loads((tmp_path / "02_x.json").read_text())["records"] == {}
    with pytest.raises(TypeError, match="cannot record"):
        lab.record("bad", object())
    assert lab.read_records(tmp_path)["02_x"]["records"] == {}


def test_cuda_request_without_cuda_is_clear(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        lab.setup("t", device="cuda")


def test_profiles_merge_all_and_lab_sections(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "big.yaml").write_text("all:\n  device: cuda\n  n: 5\n01_a:\n  n: 10\n")
    assert lab.load_profile("big", "01_a", tmp_path) == {"device": "cuda", "n": 10}
    assert lab.load_profile("big", "02_b", tmp_path) == {"device": "cuda", "n": 5}
    with pytest.raises(FileNotFoundError, match="available: \\['big'\\]"):
        lab.load_profile("nope", "01_a", tmp_path)


def test_table_is_a_dataframe_that_renders_as_html():
    import pandas as pd

    df = lab.table([{"model": "lenet5", "acc": 0.98765, "max |δ|": 0.3}, {"model": "cnn", "acc": 0.5}])
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["acc", "max |δ|"] and list(df.index) == ["lenet5", "cnn"]
    assert df.loc["lenet5", "acc"] == 0.9877 and df.loc["cnn", "max |δ|"] == ""
    html = df._repr_html_()
    assert "<table" in html and "max |δ|" in html
    # the pipes that broke the Markdown table survive a CSV round trip as text
    back = pd.read_csv(io.StringIO(df.to_csv()), index_col=0)
    assert list(back.columns) == ["acc", "max |δ|"]


def test_table_rejects_what_is_not_rows():
    with pytest.raises(ValueError, match="non-empty list of dicts"):
        lab.table([])
    with pytest.raises(ValueError, match="non-empty list of dicts"):
        lab.table({"model": "lenet5"})


def _tiny_lab(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 2\nseed = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_cli_runs_labs_with_a_profile_and_writes_a_summary(tmp_path, monkeypatch, capsys):
    labs = tmp_path / "labs"
    (labs / "profiles").mkdir(parents=True)
    _tiny_lab(labs / "01_ok.ipynb", "import advkit.lab\nlab = advkit.lab.setup('01_ok', seed=seed, device='cpu')\n"
                                    "lab.record('n_squared', n * n)")
    _tiny_lab(labs / "02_broken.ipynb", "raise RuntimeError('boom')")
    (labs / "profiles" / "big.yaml").write_text("all:\n  n: 3\n  unknown_param: 1\n")
    monkeypatch.setenv("ADVKIT_LABS", str(labs))
    out = tmp_path / "build"
    code = cli.main(["labs", "run", "--profile", "big", "--out", str(out)])
    assert code == 1  # one lab failed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["01_ok"]["status"] == "ok" and summary["01_ok"]["records"] == {"n_squared": 9}
    assert summary["02_broken"]["status"] == "failed" and "boom" in summary["02_broken"]["error"]
    assert (out / "labs" / "01_ok.ipynb").exists()
    assert "| n_squared | 9 |" in (out / "summary.md").read_text()
    # a single lab by number, parameters overridden on the command line
    assert cli.main(["labs", "run", "1", "-p", "n=4", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["01_ok"]["records"] == {"n_squared": 16}
    assert cli.main(["labs", "run", "99_missing", "--out", str(out)]) == 2
    assert "no lab named" in capsys.readouterr().err


def test_cli_sets_the_kernels_torch_threads(tmp_path, monkeypatch, capsys):
    labs = tmp_path / "labs"
    labs.mkdir()
    _tiny_lab(labs / "01_threads.ipynb", "import torch, advkit.lab\nlab = advkit.lab.setup('01_threads', seed=seed)\n"
                                         "lab.record('threads', torch.get_num_threads())")
    monkeypatch.setenv("ADVKIT_LABS", str(labs))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    out = tmp_path / "build"
    assert cli.main(["labs", "run", "--threads", "1", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["01_threads"]["records"] == {"threads": 1}
    monkeypatch.setenv("OMP_NUM_THREADS", "two")
    assert cli.main(["labs", "run", "--out", str(out)]) == 2
    assert "OMP_NUM_THREADS='two' is not a positive integer" in capsys.readouterr().err


def test_cli_help_and_list(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "labs" in capsys.readouterr().out
    assert cli.main(["labs", "list"]) == 0
