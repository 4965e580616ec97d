"""The generated summary page, status box and README block never say more than the computed verdicts.

Each test builds the pages from small hand-made results (no model runs) and scans the text: every
row that names a model carries exactly the verdict its finding's rule computes, the word
"reproduced" appears only where that verdict is "reproduced" (or in the rules and definitions), a
verdict read off the offline proxy judge says so, and the compactness size sits beside its verdict.
"""
from __future__ import annotations

import re

import pytest

from replication import book, status
from replication.experiments import compactness
from replication.findings import FINDINGS, VERDICTS, verdict_of


def _row(arm: str, q: float, fraction: float, cut: tuple[float, float], drop: tuple[float, float] | None) -> dict:
    """A compactness summary row; `drop=None` is an arm measured on harm alone."""
    row = {"arm": arm, "q": q, "count": round(fraction * 1e6), "fraction": fraction, "n_seeds": 3,
           "harm_prefill": 1 - sum(cut) / 2, "harm_prefill_cut": sum(cut) / 2,
           "harm_prefill_cut_lo": cut[0], "harm_prefill_cut_hi": cut[1]}
    if drop is not None:
        row.update({"drop:utility:a": sum(drop) / 2, "drop:utility:a_lo": drop[0], "drop:utility:a_hi": drop[1]})
    return row


def _compactness(btap_cut, *, fraction=5e-6, random_cut=(0.0, 0.1), control_cut=(0.0, 0.1), base_harm=1.0,
                 judge=None, scale="full") -> dict:
    """A results dict whose headline is computed by the real rule from one B-TAP row and its baselines."""
    summary = [_row("btap", 1e-3, fraction, btap_cut, (0.0, 0.02)),
               _row("random", 1e-3, fraction, random_cut, None),
               _row("control", 1e-3, fraction, control_cut, None)]
    res = {"baseline": {"values": {"harm_prefill": base_harm, "utility:a": 1.0}}, "summary": summary,
           "utility_metrics": ["utility:a"], "scale": scale, "model": "m", "finding": "compactness"}
    if judge:
        res["judge"] = judge
    res["headline"] = compactness.headline(res)
    return res


CASES = {   # model name -> (results, the verdict the rule must give)
    "m-meets": (_compactness((0.85, 0.95)), "reproduced"),
    "m-beyond-bound": (_compactness((0.85, 0.95), fraction=5e-3), "partly reproduced"),
    "m-random-meets": (_compactness((0.85, 0.95), random_cut=(0.82, 0.9)), "partly reproduced"),
    "m-control-meets": (_compactness((0.85, 0.95), control_cut=(0.81, 0.99)), "partly reproduced"),
    "m-undecided": (_compactness((0.7, 0.95)), "inconclusive"),
    "m-fails": (_compactness((0.3, 0.5)), "not reproduced"),
    "m-floor": (_compactness((0.85, 0.95), base_harm=0.1), "not measurable"),
    "m-proxy": (_compactness((0.85, 0.95), judge="reference_nll"), "reproduced"),
    "m-smoke": (_compactness((0.85, 0.95), scale="smoke"), "reproduced"),
}
MODELS = list(CASES) + ["m-not-run"]
RESULTS = {"compactness": {m: r for m, (r, _) in CASES.items()},
           "generality": {"m-fails": {"scale": "full", "headline": {
               "categories": 5, "categories_passing": 1, "undecided": 0, "count": 100,
               "mean_pair_jaccard": 0.1, "random_jaccard": 0.01}}}}
ALLOWED = re.compile(r"^(#|```\{admonition\}|- \*\*(reproduced|partly reproduced|Finding \d)|Each verdict follows"
                     r"|Verdict rules|<!--|\*\*The paper\.\*\*)")


def _verdict(finding: str, model: str) -> str:
    return verdict_of(FINDINGS[finding], RESULTS.get(finding, {}).get(model))[1]


def _pages() -> dict[str, str]:
    return {"summary": book.summary_markdown(RESULTS, MODELS), "status": status.status_markdown(RESULTS, MODELS),
            "readme": status.readme_block(RESULTS, MODELS)}


def test_the_rule_gives_the_intended_verdicts():
    for model, (res, expected) in CASES.items():
        assert verdict_of(FINDINGS["compactness"], res)[1] == expected, model


def _rows(text: str):
    """(line, finding key, model) for every line that names a model: its finding is named on the line
    (tables) or by the `###` heading above it (the summary's measurement bullets)."""
    heading = None
    for line in text.splitlines():
        if line.startswith("### "):
            heading = next((f.key for f in FINDINGS.values() if f.title in line), None)
        model = next((m for m in MODELS if f"`{m}`" in line), None)
        if model is None:
            continue
        finding = next((f.key for f in FINDINGS.values() if f.title in line), heading)
        assert finding is not None, line
        yield line, finding, model


@pytest.mark.parametrize("page", ["summary", "status", "readme"])
def test_every_row_carries_its_computed_verdict(page):
    rows = list(_rows(_pages()[page]))
    for line, finding, model in rows:
        words = re.findall(r"\*\*([a-z ]+)\*\*", line)
        assert words and words[0] == _verdict(finding, model), (page, line)
    assert len({m for _, f, m in rows if f == "compactness"}) >= len(CASES)


@pytest.mark.parametrize("page", ["summary", "status", "readme"])
def test_reproduced_is_never_claimed_where_the_verdict_says_otherwise(page):
    text = _pages()[page]
    named = {line: (finding, model) for line, finding, model in _rows(text)}
    for line in text.splitlines():
        bare = re.sub(r"\b(not|partly) reproduced\b", "", line)
        if "reproduced" not in bare or ALLOWED.match(line.strip()):
            continue
        assert line in named, f"{page}: 'reproduced' in a line that names no result: {line!r}"
        assert _verdict(*named[line]) == "reproduced", (page, line)


def test_proxy_judge_size_and_scale_are_marked_beside_the_verdict():
    pages = _pages()
    row = next(l for l in pages["summary"].splitlines() if "`m-proxy`" in l and l.startswith("| Finding 1"))
    assert "reference_nll (proxy)" in row
    beyond = next(l for l in pages["status"].splitlines() if "`m-beyond-bound`" in l)
    assert "500x the paper's 0.001% (bound 100x)" in beyond
    smoke = next(l for l in pages["status"].splitlines() if "`m-smoke`" in l)
    assert "smoke scale" in smoke
    assert "**not run**" in next(l for l in pages["summary"].splitlines() if "`m-not-run`" in l)


def test_summary_states_the_rules_and_outcomes_before_the_measurements():
    text = _pages()["summary"]
    assert text.index("## Verdicts") < text.index("## How to read a verdict") < text.index("## The rules") \
        < text.index("## The paper's claims and our measurements")
    for word in VERDICTS:
        assert f"- **{word}**:" in text
    assert "point" in text and "100x the paper's 0.001%" in text


def test_readme_block_is_replaced_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{status.START}\nold\n{status.END}\n\nrest\n")
    assert status.refresh_readme(readme, RESULTS, MODELS)
    text = readme.read_text()
    assert text.startswith("intro") and text.rstrip().endswith("rest") and "old" not in text
    assert "`m-meets`" in text
    assert not status.refresh_readme(readme, RESULTS, MODELS)   # unchanged the second time
    plain = tmp_path / "OTHER.md"
    plain.write_text("no markers\n")
    assert not status.refresh_readme(plain, RESULTS, MODELS) and plain.read_text() == "no markers\n"


def test_an_undefined_verdict_word_fails_loudly(monkeypatch):
    monkeypatch.setattr(compactness, "verdict", lambda res: ("x", "sort of reproduced"))
    with pytest.raises(ValueError, match="not one of the defined outcomes"):
        verdict_of(FINDINGS["compactness"], {"headline": {}})


def test_a_pair_finding_is_filed_under_the_pair_and_listed_under_its_model(tmp_path, monkeypatch):
    import json
    from replication.experiments import compression
    monkeypatch.setenv("HARMPRUNE_RESULTS", str(tmp_path))
    folder = compression.results_folder("organism-base")
    assert folder == compression.results_folder("organism-aligned") == "organism-aligned_vs_organism-base"
    assert FINDINGS["compression"].results_folder("organism-base") == folder and FINDINGS["compression"].per_pair
    assert FINDINGS["compactness"].results_folder("organism-base") == "organism-base"
    res = {"finding": "compression", "model": "organism-aligned", "folder": folder, "scale": "full",
           "pair": {"aligned": "organism-aligned", "unaligned": "organism-base", "name": "organism-aligned vs organism-base"}}
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "compression.json").write_text(json.dumps(res))
    (tmp_path / "organism-aligned").mkdir()   # an older run filed under the aligned model: ignored
    (tmp_path / "organism-aligned" / "compression.json").write_text(json.dumps({**res, "folder": None, "scale": "smoke"}))
    from replication.results import read_result
    assert read_result("organism-base", "compression")["scale"] == "full"   # either member reads the pair's file
    loaded = book.load_results()["compression"]
    assert list(loaded) == ["organism-aligned"] and loaded["organism-aligned"]["scale"] == "full"
    monkeypatch.setattr(compression, "verdict", lambda r: ("measured", "not reproduced"))   # hand-made: no readings
    rows = [r for r in status.status_rows({"compression": loaded}, ["organism-aligned"]) if "3" in r["finding"]]
    assert rows[0]["run on"].startswith("`organism-aligned vs organism-base`")
    # the pair's run folder is not mistaken for a model
    assert folder not in book._models(["organism-aligned"], {"compression": {folder: tmp_path}}, {"compression": loaded})
