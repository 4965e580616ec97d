"""B-TAP as a tool (`python -m replication prune | select | apply`) on a tiny local model folder and
data files written here: the pruned folder loads with transformers and differs from the original
exactly at the mask; selection from saved scores is pruning at that q; every bad input is one
line `error: ...`, a non-zero exit and no output."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from replication import cli, tool
from replication.pruning import Mask
from replication.user_data import UserDataError, check_tokenizes, read_examples
from tiny_models import tiny_examples, tiny_llama, tiny_tokenizer

P, Q = "0.05", "0.01"


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _rows(kind: str, seed: int, n: int = 6) -> list[dict]:
    return [{"prompt": e.prompt, "response": e.response, "category": e.category}
            for e in tiny_examples(n, kind=kind, seed=seed)]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny model folder (and a second model of the same architecture), harmful JSONL, benign CSV."""
    root = tmp_path_factory.mktemp("tool")
    tok = tiny_tokenizer()
    for name, seed in (("model", 0), ("other", 1)):
        tiny_llama(seed=seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    _write_jsonl(root / "harmful.jsonl", _rows("harmful", 1))
    benign = _rows("benign", 2)
    _write_csv(root / "benign.csv", ["prompt", "response"], [[r["prompt"], r["response"]] for r in benign])
    return root


def _main(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()   # only what the command itself prints
    rc = cli.main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def pruned(work):
    """`prune` at (P, Q) with --scores-out, run once for the module (through the CLI)."""
    rc = cli.main(["prune", "--model", str(work / "model"), "--harmful", str(work / "harmful.jsonl"),
                   "--benign", str(work / "benign.csv"), "-p", P, "-q", Q, "--out", str(work / "mask"),
                   "--scores-out", str(work / "scores"), "--no-progress"])
    assert rc == 0
    return work / "mask.safetensors"


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ----------------------------------------------------------------------------------------------
# The happy path
# ----------------------------------------------------------------------------------------------
def test_prune_writes_mask_summary_and_sparsity_report(work, pruned):
    mask = Mask.load(pruned)
    assert mask.count() > 0 and mask.meta["config"]["p"] == float(P) and mask.meta["config"]["q"] == float(Q)
    assert mask.meta["data"]["harmful"]["n"] == 6 and mask.meta["data"]["harmful"]["categories"] == {"c0": 3, "c1": 3}
    summary = json.loads((work / "mask.json").read_text())
    assert summary["sha256"] == mask.digest() and summary["fingerprint"] == mask.fingerprint
    report = json.loads((work / "mask.sparsity.json").read_text())
    assert report["count"] == mask.count()
    assert report["decoder_linear_weights"] == sum(
        torch.Size(s).numel() for s in mask.shapes.values())


def test_prune_then_apply_gives_a_folder_zeroed_exactly_at_the_mask(work, pruned, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = work / "pruned-model"
    rc, stdout, _ = _main(capsys, "apply", "--model", work / "model", "--mask", pruned, "--out", out, "--no-progress")
    assert rc == 0 and str(out) in stdout
    mask = Mask.load(pruned)
    original = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32).state_dict()
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert AutoTokenizer.from_pretrained(out)("a b")["input_ids"] == AutoTokenizer.from_pretrained(work / "model")("a b")["input_ids"]
    state = model.state_dict()
    assert set(state) == set(original)
    for key, w in state.items():
        module = key.removesuffix(".weight")
        newly_zero = torch.nonzero(((w == 0) & (original[key] != 0)).reshape(-1)).reshape(-1)
        expected = mask.indices.get(module, torch.zeros(0, dtype=torch.long)) if key.endswith(".weight") else None
        if expected is None or module not in mask.indices:
            assert torch.equal(w, original[key]), key
            continue
        expected = expected[original[key].reshape(-1)[expected] != 0]   # weights already zero stay zero
        assert torch.equal(newly_zero, expected), key
        keep = torch.ones(w.numel(), dtype=torch.bool)
        keep[mask.indices[module]] = False
        assert torch.equal(w.reshape(-1)[keep], original[key].reshape(-1)[keep]), key
    record = json.loads((out / tool.APPLIED_RECORD).read_text())
    assert record["mask_digest"] == mask.digest() and record["config"] == mask.meta["config"]
    assert record["count"] == mask.count() and Path(record["mask"]) == pruned.resolve()
    assert not [p for p in work.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


def test_select_from_saved_scores_equals_pruning_at_that_q(work, pruned, capsys):
    rc, stdout, _ = _main(capsys, "select", "--scores", work / "scores", "-q", "0.03", "--out", work / "sel.safetensors")
    assert rc == 0 and "pruned" in stdout
    rc, _, _ = _main(capsys, "prune", "--model", work / "model", "--harmful", work / "harmful.jsonl",
                     "--benign", work / "benign.csv", "-p", P, "-q", "0.03", "--out", work / "direct.safetensors",
                     "--no-progress")
    assert rc == 0
    selected, direct = Mask.load(work / "sel.safetensors"), Mask.load(work / "direct.safetensors")
    assert selected.count() > Mask.load(pruned).count()
    assert selected.equals(direct) and selected.digest() == direct.digest()
    assert selected.fingerprint == direct.fingerprint and selected.meta["config"] == direct.meta["config"]
    sel_report = json.loads((work / "sel.sparsity.json").read_text())
    direct_report = json.loads((work / "direct.sparsity.json").read_text())
    assert sel_report.pop("zeros_now_in_decoder_linears") is None
    direct_report.pop("zeros_now_in_decoder_linears")
    assert sel_report == direct_report
    # at the saved q, selection gives back the mask prune wrote
    assert tool.select(work / "scores", work / "same", q=float(Q)).mask.equals(Mask.load(pruned))


def test_paper_defaults_on_a_tiny_model_warn_in_one_line(work, tmp_path, capsys):
    # no -p/-q: a folder with no preset gets the paper's p = 5e-5, q = 1e-5, too small for 432-entry matrices
    rc, stdout, err = _main(capsys, "prune", "--model", work / "model", "--harmful", work / "harmful.jsonl",
                            "--benign", work / "benign.csv", "--out", tmp_path / "m", "--no-progress")
    assert rc == 0 and "pruned 0 weights" in stdout
    assert Mask.load(tmp_path / "m.safetensors").meta["config"]["q"] == 1e-5
    assert [l for l in err.splitlines() if l.strip()] == [l for l in err.splitlines() if l.startswith("warning: ")]
    assert "round to zero pruning candidates" in err


# ----------------------------------------------------------------------------------------------
# Bad input: one line, non-zero exit, nothing written
# ----------------------------------------------------------------------------------------------
BAD_DATA = {
    "missing column": ("bad.jsonl", [{"prompt": "x?", "response": "y."}, {"prompt": "z?"}],
                       "bad.jsonl:2: the row has no 'response'"),
    "empty file": ("bad.jsonl", [], "the file has no examples"),
    "empty response": ("bad.jsonl", [{"prompt": "x?", "response": "y."}, {"prompt": "z?", "response": ""},
                                     {"prompt": "w?", "response": "v."}], "bad.jsonl:2: the response is empty"),
    "not json": ("bad.jsonl", ["{\"prompt\": \"x\", \"response\": \"y\"}", "{oops"], "bad.jsonl:2: not valid JSON"),
    "csv header": ("bad.csv", (["question", "response"], [["x?", "y."]]), "has no 'prompt' column"),
    "wrong suffix": ("bad.txt", [], "unknown file type '.txt'"),
}


def _write_bad(folder: Path, name: str, content) -> Path:
    path = folder / name
    if name.endswith(".csv"):
        return _write_csv(path, *content)
    if content and isinstance(content[0], str):
        path.write_text("\n".join(content) + "\n")
        return path
    return _write_jsonl(path, content)


def _assert_one_line_error(rc: int, err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert rc != 0
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_line_and_writes_nothing(work, tmp_path, capsys, case):
    name, content, needle = BAD_DATA[case]
    bad = _write_bad(tmp_path, name, content)
    before = _listing(tmp_path)
    rc, _, err = _main(capsys, "prune", "--model", work / "model", "--harmful", bad, "--benign", work / "benign.csv",
                       "-p", P, "-q", Q, "--out", tmp_path / "mask", "--scores-out", tmp_path / "scores",
                       "--no-progress")
    _assert_one_line_error(rc, err, needle)
    assert _listing(tmp_path) == before


def test_response_that_tokenises_to_nothing_is_named_by_line(work, tmp_path, capsys, monkeypatch):
    # The tiny byte-level tokenizer maps any text to tokens; this one drops non-ASCII text, as
    # some tokenizers drop characters they cannot encode.
    class AsciiOnly:
        def __init__(self, tok):
            self._tok = tok

        def __call__(self, text, **kw):
            return self._tok("".join(c for c in text if c.isascii()), **kw)

        def __getattr__(self, name):
            return getattr(self._tok, name)

    real_load = tool.load

    def load(*args, **kw):
        loaded = real_load(*args, **kw)
        loaded.tokenizer = AsciiOnly(loaded.tokenizer)
        return loaded

    monkeypatch.setattr(tool, "load", load)
    bad = _write_jsonl(tmp_path / "h.jsonl", [{"prompt": "x?", "response": "y."}, {"prompt": "z?", "response": "y."},
                                              {"prompt": "w?", "response": "\u4e2d\u6587"}])
    rc, _, err = _main(capsys, "prune", "--model", work / "model", "--harmful", bad, "--benign", work / "benign.csv",
                       "-p", P, "-q", Q, "--out", tmp_path / "mask", "--no-progress")
    _assert_one_line_error(rc, err, "h.jsonl:3: example 2")
    assert "empty response" in err and not (tmp_path / "mask.safetensors").exists()


@pytest.mark.parametrize("flags,needle", [
    (["-p", "2"], "p must be a fraction in [0, 1)"),
    (["-q", "0"], "q must be a fraction strictly between 0 and 1"),
    (["--scope", "row"], "scope must be one of"),
])
def test_bad_parameters_fail_before_loading(work, tmp_path, capsys, monkeypatch, flags, needle):
    monkeypatch.setattr(tool, "load", lambda *a, **k: pytest.fail("loaded the model before checking p/q"))
    rc, _, err = _main(capsys, "prune", "--model", work / "model", "--harmful", work / "harmful.jsonl",
                       "--benign", work / "benign.csv", "-p", P, "-q", Q, *flags, "--out", tmp_path / "m",
                       "--no-progress")
    _assert_one_line_error(rc, err, needle)
    assert not list(tmp_path.iterdir())


def test_select_checks_q_and_the_scores_folder(work, pruned, tmp_path, capsys):
    rc, _, err = _main(capsys, "select", "--scores", work / "scores", "-q", "1.5", "--out", tmp_path / "m")
    _assert_one_line_error(rc, err, "q must be a fraction")
    rc, _, err = _main(capsys, "select", "--scores", tmp_path, "-q", Q, "--out", tmp_path / "m")
    _assert_one_line_error(rc, err, "not a scores folder")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("setup,needle", [
    ("missing", "unknown model"),
    ("broken", "is not a valid JSON file"),
    ("no weights", "could not load"),
])
def test_a_model_that_does_not_load_is_one_line(work, tmp_path, capsys, setup, needle):
    model = tmp_path / "m"
    if setup == "broken":
        model.mkdir()
        (model / "config.json").write_text("{not json")
    elif setup == "no weights":
        model.mkdir()
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            (model / name).write_bytes((work / "model" / name).read_bytes())
    rc, _, err = _main(capsys, "prune", "--model", model, "--harmful", work / "harmful.jsonl",
                       "--benign", work / "benign.csv", "-p", P, "-q", Q, "--out", tmp_path / "mask", "--no-progress")
    _assert_one_line_error(rc, err, needle)
    assert not (tmp_path / "mask.safetensors").exists()


def test_apply_refuses_a_mask_of_another_model(work, pruned, tmp_path, capsys):
    out = tmp_path / "pruned"
    rc, _, err = _main(capsys, "apply", "--model", work / "other", "--mask", pruned, "--out", out, "--no-progress")
    _assert_one_line_error(rc, err, "refusing to apply")
    assert "fingerprint" in err and not out.exists() and not list(tmp_path.iterdir())


def test_apply_refuses_a_fine_tune_of_the_same_base(work, pruned, tmp_path, capsys):
    from transformers import AutoModelForCausalLM
    tuned = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    with torch.no_grad():
        for layer in tuned.model.layers:
            for mod in layer.modules():
                if isinstance(mod, torch.nn.Linear):
                    mod.weight.add_(0.05)
    tuned.save_pretrained(tmp_path / "tuned")
    tiny_tokenizer().save_pretrained(tmp_path / "tuned")
    rc, _, err = _main(capsys, "apply", "--model", tmp_path / "tuned", "--mask", pruned, "--out", tmp_path / "out",
                       "--no-progress")
    _assert_one_line_error(rc, err, "another fine-tune")
    assert not (tmp_path / "out").exists()


def test_apply_failures_leave_no_folder(work, pruned, tmp_path, capsys, monkeypatch):
    rc, _, err = _main(capsys, "apply", "--model", work / "model", "--mask", tmp_path / "none.safetensors",
                       "--out", tmp_path / "out", "--no-progress")
    _assert_one_line_error(rc, err, "no mask at")

    class Failing:
        def save_pretrained(self, folder):
            (Path(folder) / "tokenizer.json").write_text("{}")
            raise OSError("disk full")

    monkeypatch.setattr(tool, "_pristine_tokenizer", lambda loaded: Failing())
    rc, _, err = _main(capsys, "apply", "--model", work / "model", "--mask", pruned, "--out", tmp_path / "out",
                       "--no-progress")
    _assert_one_line_error(rc, err, "disk full")
    assert not list(tmp_path.iterdir()), "a half-written or staging folder was left behind"
    (tmp_path / "out").mkdir()
    rc, _, err = _main(capsys, "apply", "--model", work / "model", "--mask", pruned, "--out", tmp_path / "out",
                       "--no-progress")
    _assert_one_line_error(rc, err, "already exists")


# ----------------------------------------------------------------------------------------------
# The file reader
# ----------------------------------------------------------------------------------------------
def test_reader_keeps_order_lines_and_optional_category(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,response,extra\n"multi\nline?",yes,1\n\nb?,"no, never",2\n', encoding="utf-8")
    exs = read_examples(path, "benign")
    assert [(e.prompt, e.response, e.category, e.kind, e.meta["line"]) for e in exs] == [
        ("multi\nline?", "yes", "", "benign", 2), ("b?", "no, never", "", "benign", 5)]
    jl = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "response": "b", "category": "weapons"}])
    assert read_examples(jl, "harmful")[0].category == "weapons"
    bad = _write_jsonl(tmp_path / "n.jsonl", [{"prompt": "a", "response": 3}])
    with pytest.raises(UserDataError, match=r"n.jsonl:1: 'response' must be text"):
        read_examples(bad, "harmful")


def test_check_tokenizes_names_file_and_line(tmp_path):
    tok = tiny_tokenizer()
    rows = [{"prompt": "a?", "response": "bread " * 100}, {"prompt": "a?", "response": "b."}]
    exs = read_examples(_write_jsonl(tmp_path / "d.jsonl", rows), "harmful")
    check_tokenizes(tok, exs, "prune")
    with pytest.raises(UserDataError, match=r"d.jsonl:2: .*skip_response_tokens"):
        check_tokenizes(tok, exs, "prune", skip_response_tokens=50)


def test_masks_and_json_are_readable_by_others(tmp_path):
    import os
    import stat

    import torch

    from replication.paths import atomic_write_json
    from replication.pruning import Mask
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
        Mask({"m": torch.tensor([0, 2])}, {"m": (2, 2)}, None).save(tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    for name in ("r.json", "m.safetensors", "m.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
