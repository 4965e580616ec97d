"""Progress of long loops: records for the runner even with the bar disabled, throttling, and the
runner streaming a notebook's progress to its stderr while the executed notebook stays clean."""
from __future__ import annotations

import io
import json
import os

import nbformat
import pytest

from replication import findings, progress, runner
from replication.findings import Finding
from replication.progress import ENV_VAR, progress_bar, report


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_go_to_the_file_even_when_the_bar_is_disabled(tmp_path, monkeypatch, capsys):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(ENV_VAR, str(path))
    items = list(progress_bar(range(5), desc="loop", enabled=False, unit="steps"))
    report("a one-off line", enabled=False)
    assert items == [0, 1, 2, 3, 4]
    recs = _records(path)
    assert [r["kind"] for r in recs] == ["start", "end", "message"]
    assert recs[0]["desc"] == "loop" and recs[0]["total"] == 5 and recs[0]["n"] == 0
    assert recs[1]["n"] == 5 and recs[1]["unit"] == "steps" and recs[1]["elapsed"] >= 0
    assert recs[2]["message"] == "a one-off line"
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""     # disabled: nothing on screen


def test_no_file_no_records_and_report_prints_when_enabled(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with progress_bar(total=3, desc="manual", enabled=False) as bar:
        bar.update(2)
        bar.set_postfix(loss="1.000")
        bar.update()
    assert bar.n == 3
    report("hello")
    assert capsys.readouterr().out == "hello\n"
    assert list(tmp_path.iterdir()) == []


def test_update_records_are_throttled(tmp_path, monkeypatch):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(ENV_VAR, str(path))
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = progress_bar(total=100, desc="throttled", enabled=False)
    for _ in range(100):       # 100 updates over 10 s of (fake) time: one record per 2 s at most
        clock[0] += 0.1
        bar.update(1)
        if bar.n == 50:
            bar.set_postfix(loss="0.500")
    bar.close()
    bar.close()                # idempotent: one end record
    recs = _records(path)
    kinds = [r["kind"] for r in recs]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("end") == 1
    updates = [r for r in recs if r["kind"] == "update"]
    assert 4 <= len(updates) <= 5
    assert all(b["elapsed"] - a["elapsed"] >= progress.RECORD_INTERVAL_S - 1e-6 for a, b in zip(updates, updates[1:]))
    assert recs[-1]["n"] == 100 and recs[-1]["postfix"] == "loss=0.500"
    assert recs[-1]["rate"] == pytest.approx(10.0, rel=0.05)


def test_rate_leaves_out_the_first_units_warm_up(tmp_path, monkeypatch):
    """A compiled stage's first step (compiling, 87 s) must not make the estimate of 0.4-s steps read hours."""
    path = tmp_path / "p.jsonl"
    monkeypatch.setenv(ENV_VAR, str(path))
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = progress_bar(total=1500, desc="organism pretrain", enabled=False, unit="steps")
    clock[0] += 87.0
    bar.update(1)
    bar._record("update")
    first = _records(path)[-1]
    assert first["first_unit"] and "eta" not in progress.format_record(first)
    assert "first step took 1m27s (warm-up included" in progress.format_record(first)
    for _ in range(20):
        clock[0] += 0.4
        bar.update(1)
    bar.close()
    end = _records(path)[-1]
    assert not end["first_unit"]
    assert end["rate"] == pytest.approx(2.5, rel=1e-3) and end["elapsed"] == pytest.approx(95.0)


def test_status_lines_read_well():
    rec = {"kind": "update", "desc": "organism pretrain", "n": 1200, "total": 3000, "unit": "steps",
           "elapsed": 300.0, "rate": 4.0, "postfix": "loss=2.345"}
    assert progress.format_record(rec) == "      organism pretrain  1200/3000 steps  4.0 steps/s  eta 7m30s  loss=2.345"
    slow = dict(rec, rate=0.25, postfix=None)
    assert "4.0 s per step" in progress.format_record(slow)
    done = dict(rec, kind="end", n=3000, elapsed=750.0)
    assert "3000/3000 steps  done in 12m" in progress.format_record(done)


def test_tail_prints_in_place_on_a_tty_and_plain_lines_otherwise(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "STATUS_INTERVAL_S", 0.0)
    monkeypatch.setattr(runner, "LOG_STATUS_INTERVAL_S", 0.0)
    monkeypatch.setattr(runner, "DONE_LINE_MIN_S", 0.0)
    path = tmp_path / "p.jsonl"

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream in (io.StringIO(), Tty()):
        path.write_text("")
        tail = runner.ProgressTail(str(path), stream, poll_s=0.05)
        monkeypatch.setenv(ENV_VAR, str(path))
        bar = progress_bar(total=2, desc="gen", enabled=False, unit="batches")
        bar.update(1)
        tail._poll()
        bar.update(1)
        bar.close()
        report("a message", enabled=False)
        tail.stop()
        text = stream.getvalue()
        assert "gen  0/2 batches  started" in text and "gen  2/2 batches  done in" in text and "a message\n" in text
        assert ("\r" in text) == isinstance(stream, Tty)


def test_status_keeps_the_outer_bar_in_view_while_inner_bars_update(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "STATUS_INTERVAL_S", 0.0)
    monkeypatch.setattr(runner, "LOG_STATUS_INTERVAL_S", 0.0)
    monkeypatch.setattr(progress, "RECORD_INTERVAL_S", 0.0)
    path = tmp_path / "p.jsonl"
    path.write_text("")
    stream = io.StringIO()
    tail = runner.ProgressTail(str(path), stream, poll_s=0.05)
    monkeypatch.setenv(ENV_VAR, str(path))
    outer = progress_bar(total=42, desc="generality run", enabled=False, unit="state")
    for _ in range(3):
        inner = progress_bar(total=1, desc="generate", enabled=False, unit="batches")
        inner.update(1)
        inner.close()
        outer.update(1)
    inner = progress_bar(total=4, desc="scores", enabled=False, unit="ex")
    tail._poll()
    last = stream.getvalue().rstrip("\n").splitlines()[-1]
    assert last.startswith("      generality run  3/42 state") and last.endswith(">  scores  0/4 ex  started")
    inner.close()
    outer.close()
    tail.stop()


def _toy_notebook(path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("model = 'x'\nscale = 'full'")
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
    monkeypatch.setattr(runner, "STATUS_INTERVAL_S", 0.5)
    monkeypatch.setattr(runner, "LOG_STATUS_INTERVAL_S", 0.5)
    monkeypatch.setattr(runner, "DONE_LINE_MIN_S", 1.0)
    return nb_dir


LOOP_CELL = """\
import time
import replication.progress as rp
rp.RECORD_INTERVAL_S = 0.2
rp.report("starting the toy loop", enabled=False)
for i in rp.progress_bar(range(12), desc="toy loop", enabled=False, unit="steps"):
    time.sleep(0.25)
print("loop finished")
"""


def test_run_notebook_streams_progress_to_stderr_and_keeps_the_notebook_clean(toy_finding, capsys):
    _toy_notebook(toy_finding / "99_toy.ipynb", LOOP_CELL)
    before = os.environ.get(ENV_VAR)
    outcome = runner.run_notebook("toy", "organism-aligned", progress=False)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "      starting the toy loop" in lines
    running = [line for line in lines if "toy loop  " in line and "/12 steps" in line and "done" not in line]
    assert running, err                        # at least one status line while the loop ran
    assert any("toy loop  12/12 steps  done in" in line for line in lines), err
    assert os.environ.get(ENV_VAR) == before   # environment restored
    outputs = json.dumps([c.get("outputs", []) for c in nbformat.read(outcome.output, 4).cells])
    assert "loop finished" in outputs
    assert "toy loop" not in outputs and "starting the toy" not in outputs and '\\"kind\\"' not in outputs


def test_progress_file_is_removed_and_failure_stays_one_line(toy_finding, monkeypatch):
    made = []
    real = runner.tempfile.mkstemp

    def mkstemp(*a, **k):
        fd, path = real(*a, **k)
        made.append(path)
        return fd, path

    monkeypatch.setattr(runner.tempfile, "mkstemp", mkstemp)
    _toy_notebook(toy_finding / "99_toy.ipynb",
                  "import replication.progress as rp\nrp.report('about to fail', enabled=False)\n"
                  "raise ValueError('broken on purpose')")
    with pytest.raises(runner.RunError) as err:
        runner.run_notebook("toy", "organism-aligned", progress=False)
    assert "\n" not in str(err.value) and "99_toy.ipynb failed in cell" in str(err.value)
    assert made and not any(os.path.exists(p) for p in made)


def test_slow_loops_name_their_unit_in_the_singular():
    from replication.progress import singular
    assert [singular(u) for u in ("batches", "steps", "states", "ex")] == ["batch", "step", "state", "ex"]


def test_under_the_runner_an_enabled_bar_writes_records_but_shows_nothing(tmp_path, monkeypatch, capsys):
    """An executed notebook stays free of bars even where a caller left `enabled` on."""
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(ENV_VAR, str(path))
    list(progress_bar(range(3), desc="organism pretrain", enabled=True, unit="steps"))
    out = capsys.readouterr()
    assert "organism pretrain" not in out.out + out.err
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert kinds[0] == "start" and kinds[-1] == "end"
