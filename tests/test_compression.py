"""Finding 3's readings on hand-built inputs, and the experiment end to end at smoke scale."""
import math

import numpy as np
import pytest
import torch

from replication.experiments import compression as C


def test_concentration_of_hand_built_scores():
    # harmful mass = positive part of -score: 4, 3, 2, 1 (and a weight whose removal would help: none)
    scores = {"a": torch.tensor([[-4.0, 5.0], [-1.0, 0.0]]), "b": torch.tensor([-3.0, -2.0])}
    total = 10.0
    curve = C.concentration(scores, [1 / 6, 2 / 6, 4 / 6, 1.0])
    assert curve == pytest.approx([4 / total, 7 / total, 1.0, 1.0])


def test_concentration_without_harmful_mass_is_nan():
    assert all(math.isnan(x) for x in C.concentration({"a": torch.ones(4)}, [0.5]))


def test_separability_identical_and_disjoint_sets():
    n = 100
    ranking = torch.arange(n, dtype=torch.float32)
    # identical: the weights most important for harm (most negative signed) are the benign top ones
    same = C.separability({"w": -ranking}, {"w": ranking}, p=0.1, q=0.1)
    assert same["inside"] == 1.0 and same["jaccard"] == 1.0
    assert same["inside_random"] == pytest.approx(0.1)
    # disjoint: harm's top set is benign's bottom set
    apart = C.separability({"w": ranking}, {"w": ranking}, p=0.1, q=0.1)
    assert apart["inside"] == 0.0 and apart["jaccard"] == 0.0
    assert apart["jaccard_random"] == pytest.approx(1 / 19)   # E|Q&P| = 1 of 10 and 10


def test_crossing_interpolates_in_log_count():
    counts = [10, 100, 1000]
    cuts = np.array([0.2, 0.4, 0.8])
    # 50% lies a quarter of the way from 0.4 to 0.8: 10 ** (2 + 0.25)
    assert C.crossing(counts, cuts, 0.5, beyond=2000) == pytest.approx(10 ** 2.25)
    assert C.crossing(counts, cuts, 0.1, beyond=2000) == 10          # reached at the first count
    assert C.crossing(counts, cuts, 0.9, beyond=2000) == 2000        # never reached: the sentinel
    batch = C.crossing(counts, np.array([[0.2, 0.4, 0.8], [0.6, 0.7, 0.9]]), 0.5, beyond=2000)
    assert batch == pytest.approx([10 ** 2.25, 10])


def test_favours_reads_intervals():
    assert C.favours({"lo": 0.1, "hi": 0.3}) == "aligned"
    assert C.favours({"lo": -0.3, "hi": -0.1}) == "unaligned"
    assert C.favours({"lo": -0.1, "hi": 0.1}) == "undecided"
    assert C.favours({"lo": 1.2, "hi": 2.0}, neutral=1.0) == "aligned"


def test_pair_of_puts_the_aligned_member_first():
    assert C.pair_of("organism-base") == ("organism-aligned", "organism-base")
    assert C.pair_of("organism-aligned") == ("organism-aligned", "organism-base")
    with pytest.raises(ValueError, match="counterpart"):
        C.pair_of("some-org/some-model")


def test_compression_smoke_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("HARMPRUNE_RESULTS", str(tmp_path))
    cfg = C.CompressionConfig.for_scale("organism-aligned", "smoke")
    result = C.run(cfg, progress=False)
    assert result["pair"] == {"aligned": "organism-aligned", "unaligned": "organism-base",
                              "name": "organism-aligned vs organism-base"}
    assert (tmp_path / "organism-aligned_vs_organism-base" / "compression.json").exists()
    assert not (tmp_path / "organism-aligned").exists()
    assert result["folder"] == C.results_folder("organism-base") == "organism-aligned_vs_organism-base"
    # the unaligned member's masks hold the aligned ones' counts at every (seed, q)
    by = {}
    for r in result["runs"]:
        by.setdefault((r["seed"], r["q"]), {})[r["member"]] = r["count"]
    assert all(len(set(v.values())) == 1 for v in by.values())
    assert set(result["headline"]["readings"]) == set(C.READINGS)
    measured, verdict = C.verdict(result)
    assert verdict in ("reproduced", "partly reproduced", "not reproduced", "not measurable")
    assert [s["stage"] for s in result["summary"]["series"]][:2] == ["pretrained", "organism-base"]
