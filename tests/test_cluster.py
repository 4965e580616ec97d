"""Sweeps through submitit: the local executor runs (notebook, model) jobs as processes, the content
cache decides what is already done, and a failed job is reported with its notebook, cell and log."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import _toy_notebook   # the runner tests' toy notebook: a parameters cell and one body cell

from replication import cli, cluster, findings, runner
from replication.findings import Finding

MODELS = ["organism-aligned", "organism-base"]


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Two smoke notebooks (a finding each) that write a result naming their model and scale."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nb_dir)
    monkeypatch.setenv("HARMPRUNE_RESULTS", str(tmp_path / "results"))
    for key, nb in (("toy_a", "97_toy_a.ipynb"), ("toy_b", "98_toy_b.ipynb")):
        monkeypatch.setitem(findings.FINDINGS, key, Finding(key, nb, key, "c", "n", "r"))
        _toy_notebook(nb_dir / nb, "import json, os, pathlib\n"
                      f"out = pathlib.Path(os.environ['HARMPRUNE_RESULTS']) / model / '{key}.json'\n"
                      "out.write_text(json.dumps({'model': model, 'scale': scale, 'value': value, 'pid': os.getpid()}))")
    return tmp_path


def _run(*extra: str) -> int:
    return cli.main(["run", "all", "--models", *MODELS, "--scale", "smoke", "--executor", "local",
                     "--max-parallel", "2", *extra])


def test_local_executor_runs_every_job_and_a_second_command_runs_nothing(toy, capsys):
    assert _run("--log-dir", str(toy / "logs")) == 0
    err = capsys.readouterr().err
    assert "4 job(s) to run through the local executor (0 cached)" in err and "4 ran, 0 cached, 0 failed" in err
    pids = set()
    for model in MODELS:
        for key in ("toy_a", "toy_b"):
            res = json.loads((toy / "results" / model / f"{key}.json").read_text())
            assert res["model"] == model and res["scale"] == "smoke"
            pids.add(res["pid"])
            executed = toy / "results" / model / f"9{'7' if key == 'toy_a' else '8'}_{key}.ipynb"
            assert json.loads(executed.read_text())["metadata"]["harmprune"]["status"] == "ok"
    assert len(pids) == 4   # each job ran in its own process
    assert _run("--log-dir", str(toy / "logs2")) == 0
    err = capsys.readouterr().err
    assert "4 job(s): all cached, nothing submitted" in err and not (toy / "logs2").exists()


def test_a_changed_parameter_reruns_only_that_finding(toy, capsys):
    assert _run() == 0
    capsys.readouterr()
    assert cli.main(["run", "toy_a", "--models", *MODELS, "--scale", "smoke", "--executor", "local",
                     "-p", "value=2"]) == 0
    err = capsys.readouterr().err
    assert "2 job(s) to run" in err and "2 ran, 0 cached" in err
    assert json.loads((toy / "results" / MODELS[0] / "toy_a.json").read_text())["value"] == 2


def test_a_failed_job_names_notebook_cell_and_log(toy, monkeypatch, capsys):
    monkeypatch.setitem(findings.FINDINGS, "toy_bad", Finding("toy_bad", "99_toy_bad.ipynb", "bad", "c", "n", "r"))
    _toy_notebook(toy / "notebooks" / "99_toy_bad.ipynb", "raise ValueError('broken on purpose')")
    code = cli.main(["run", "toy_bad", "--models", MODELS[0], "--scale", "smoke", "--executor", "local"])
    err = capsys.readouterr().err
    assert code == 1
    line = next(ln for ln in err.splitlines() if ln.startswith("error: 99_toy_bad.ipynb"))
    assert "failed in cell" in line and "ValueError: broken on purpose" in line and "(log: " in line
    log = Path(line.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.exists()


def test_bad_input_fails_before_anything_is_submitted(toy, capsys):
    assert cli.main(["run", "all", "--models", "no-such-model", "--executor", "local"]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert cli.main(["run", "toy_a", "--models", MODELS[0], "--executor", "local", "-p", "nope=1"]) == 1
    assert "has no parameter(s) nope" in capsys.readouterr().err
    assert cli.main(["run", "toy_a", "--model", "a", "--models", "b", "--executor", "local"]) == 1
    with pytest.raises(ValueError, match="max_parallel"):
        cluster.submit([], "local", max_parallel=0)


#: two of the book's own notebooks (the cheapest at smoke scale), not toys: the issue's done-when as a user runs it
REAL_FINDINGS = ["compactness", "dissociation"]


def test_real_smoke_notebooks_on_two_models_in_one_command_then_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARMPRUNE_RESULTS", str(tmp_path / "results"))
    argv = ["run", *REAL_FINDINGS, "--models", *MODELS, "--scale", "smoke", "--executor", "local",
            "--max-parallel", "2", "--no-progress"]
    assert cli.main([*argv, "--log-dir", str(tmp_path / "logs")]) == 0
    err = capsys.readouterr().err
    assert "4 job(s) to run through the local executor (0 cached)" in err and "4 ran, 0 cached, 0 failed" in err
    for model in MODELS:
        for key in REAL_FINDINGS:
            res = json.loads((tmp_path / "results" / model / f"{key}.json").read_text())
            assert res["model"] == model and res["scale"] == "smoke" and res["finding"] == key
    assert cli.main([*argv, "--log-dir", str(tmp_path / "logs2")]) == 0
    assert "4 job(s): all cached, nothing submitted" in capsys.readouterr().err
    assert not (tmp_path / "logs2").exists()


def test_all_goes_alone(capsys):
    assert cli.main(["run", "all", "compactness", "--executor", "local"]) == 1
    assert "`all` already runs every finding" in capsys.readouterr().err


def test_both_members_of_a_pair_submit_one_compression_job(capsys):
    from replication.cluster import jobs_for
    jobs = jobs_for("compression", ["organism-aligned", "organism-base"], scale="smoke")
    assert [j.model for j in jobs] == ["organism-aligned"]
    assert "same pair run" in capsys.readouterr().err
