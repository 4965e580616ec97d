"""The runner and CLI: one-line errors with a non-zero exit, parameter parsing, caching, summary page."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from replication import book, findings, runner
from replication.findings import Finding

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, env_results: Path) -> subprocess.CompletedProcess:
    import os
    env = dict(os.environ, HARMPRUNE_RESULTS=str(env_results))
    return subprocess.run([sys.executable, "-m", "replication", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def test_bad_model_name_is_one_line_with_presets(tmp_path):
    proc = _cli("run", "models", "--model", "no-such-model", env_results=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'no-such-model'")
    assert "organism-aligned" in lines[0]


def test_unknown_finding_lists_the_valid_ones(tmp_path):
    proc = _cli("run", "nonsense", env_results=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: unknown finding 'nonsense'; use one of: all, " + ", ".join(findings.FINDINGS)]


def test_parameters_parse_as_literals():
    assert runner.parse_parameters(["q=1e-3", "seeds=[0, 1]", "name=abc", "flag=True"]) == {
        "q": 1e-3, "seeds": [0, 1], "name": "abc", "flag": True}
    with pytest.raises(runner.RunError, match="key=value"):
        runner.parse_parameters(["q"])


def _toy_notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("model = 'x'\nscale = 'full'\nvalue = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def toy_finding(tmp_path, monkeypatch):
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nb_dir)
    monkeypatch.setenv("HARMPRUNE_RESULTS", str(tmp_path / "results"))
    monkeypatch.setitem(findings.FINDINGS, "toy", Finding("toy", "99_toy.ipynb", "Toy", "c", "n", "r"))
    return nb_dir


def test_failing_cell_names_notebook_and_cell(toy_finding):
    _toy_notebook(toy_finding / "99_toy.ipynb", "raise ValueError('broken on purpose')")
    with pytest.raises(runner.RunError) as err:
        runner.run_notebook("toy", "organism-aligned", progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "99_toy.ipynb failed in cell" in msg and "ValueError: broken on purpose" in msg


def test_unknown_parameter_lists_valid_ones(toy_finding):
    _toy_notebook(toy_finding / "99_toy.ipynb", "print(value)")
    with pytest.raises(runner.RunError, match="no parameter.*bogus.*valid: model, scale, value"):
        runner.run_notebook("toy", "organism-aligned", {"bogus": 1}, progress=False)


def test_rerun_with_nothing_changed_is_cached(toy_finding):
    _toy_notebook(toy_finding / "99_toy.ipynb", "print(value * 2)")
    first = runner.run_notebook("toy", "organism-aligned", {"value": 21}, progress=False)
    assert not first.cached
    outputs = [o for c in nbformat.read(first.output, 4).cells for o in c.get("outputs", [])]
    assert any("42" in o.get("text", "") for o in outputs)
    assert runner.run_notebook("toy", "organism-aligned", {"value": 21}, progress=False).cached
    assert not runner.run_notebook("toy", "organism-aligned", {"value": 22}, progress=False).cached


def test_missing_notebook_error(toy_finding):
    with pytest.raises(runner.RunError, match="99_toy.ipynb.*does not exist"):
        runner.run_notebook("toy", "organism-aligned", progress=False)


def test_summary_says_not_run_and_applies_the_rule():
    met = {"smallest_fraction": 5e-6, "smallest_count": 9000, "targeted_vs_random": True, "harm_at_smallest": 0.1,
           "baseline_harm_prefill": 1.0, "harm_cut_ci": [0.85, 0.95]}
    res = {"compactness": {"organism-aligned": {"headline": met}}}
    md = book.summary_markdown(res, ["organism-aligned", "smollm2-135m-instruct"])
    rows = [l for l in md.splitlines() if l.startswith("| Finding 1")]
    assert len(rows) == 2
    assert "**reproduced**" in rows[0] and "0.5x the paper's 0.001%" in rows[0]
    assert "**not run**" in rows[1]
    assert "9,000 weights" in md
    none = book.summary_markdown({"compactness": {"m": {"headline": {"smallest_fraction": None, "best_harm_reduction": 0.4,
                                                                     "best_harm_reduction_ci": [0.3, 0.5]}}}}, ["m"])
    assert "**not reproduced**" in none and "40% [30%, 50%]" in none


def test_finding_page_shows_each_model_side_by_side():
    res = {"organism-aligned": {"headline": {"smallest_fraction": None, "best_harm_reduction": 0.97,
                                             "best_harm_reduction_ci": [0.9, 1.0]}},
           "smollm2-135m-instruct-safety": {"headline": {"smallest_fraction": 1e-6, "smallest_count": 9000,
                                                         "targeted_vs_random": True, "harm_at_smallest": 0.1,
                                                         "baseline_harm_prefill": 1.0, "harm_cut_ci": [0.85, 0.95]}}}
    runs = {m: Path(f"results/{m}/01_compactness.ipynb") for m in res}
    md = book.finding_runs_markdown("compactness", runs, list(res), res)
    rows = [l for l in md.splitlines() if l.startswith("| `")]
    assert rows[0].startswith("| `organism-aligned`") and "**not reproduced**" in rows[0]
    assert rows[1].startswith("| `smollm2-135m-instruct-safety`") and "**reproduced**" in rows[1]
