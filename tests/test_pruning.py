"""B-TAP selection, masks and variants: exact sets against brute force, exact restore, errors."""
from __future__ import annotations

import warnings

import pytest
import torch

from replication.data import Example
from replication.pruning import (
    Mask,
    MaskMismatchError,
    PruneConfig,
    applied,
    intersection_of,
    next_q,
    prune_btap,
    select_weights,
    snip_rowwise,
    top_sets,
    wei_set_difference,
)
from replication.scoring import Scores, compute_scores, decoder_linears, model_fingerprint
from tiny_models import tiny_llama

SHAPES = {"m.layers.0.a": (12, 36), "m.layers.0.b": (99, 36), "m.layers.1.a": (12, 36), "m.layers.1.b": (36, 99)}


# -- brute-force references --------------------------------------------------------------------
def ref_top(x: torch.Tensor, k: int) -> set[int]:
    """Top k by (score descending, flat index ascending), by plain Python sorting."""
    vals = x.reshape(-1).tolist()
    return set(sorted(range(len(vals)), key=lambda i: (-vals[i], i))[:k])


def ref_top_global(scores: dict, frac: float) -> dict[str, set[int]]:
    entries = []
    for j, (name, x) in enumerate(scores.items()):
        entries += [(-v, j, i, name) for i, v in enumerate(x.reshape(-1).tolist())]
    k = int(frac * len(entries))
    out = {name: set() for name in scores}
    for _, _, i, name in sorted(entries)[:k]:
        out[name].add(i)
    return out


def tied_scores(seed: int, fingerprint: str = "fp") -> Scores:
    """Small integer scores: many ties at every cut."""
    g = torch.Generator().manual_seed(seed)
    return Scores({k: torch.randint(-6, 7, s, generator=g).float() for k, s in SHAPES.items()},
                  fingerprint=fingerprint)


@pytest.fixture(scope="module")
def data(harmful_examples, benign_examples):
    return harmful_examples, benign_examples


@pytest.fixture(scope="module")
def scores(model, tok, data):
    harm, benign = data
    return (compute_scores(model, tok, harm, score="signed", role="prune", progress=False),
            compute_scores(model, tok, benign, score="abs", role="preserve", progress=False))


# -- selection -----------------------------------------------------------------------------------
@pytest.mark.parametrize("p,q", [(0.05, 0.1), (0.3, 0.05), (0.01, 0.2)])
def test_per_matrix_selection_is_exactly_q_minus_p(p, q):
    harm, benign = tied_scores(0), tied_scores(1)
    mask = select_weights(harm, benign, p, q)
    for name, shape in SHAPES.items():
        n = shape[0] * shape[1]
        expected = ref_top(-harm[name], int(q * n)) - ref_top(benign[name], int(p * n))
        assert set(mask.indices[name].tolist()) == expected, name
    assert mask.count() == mask.meta["count"] > 0


def test_global_selection_matches_brute_force():
    harm, benign = tied_scores(2), tied_scores(3)
    mask = select_weights(harm, benign, 0.02, 0.08, scope="global")
    q_sets = ref_top_global({k: -v for k, v in harm.items()}, 0.08)
    p_sets = ref_top_global(dict(benign), 0.02)
    for name in SHAPES:
        assert set(mask.indices[name].tolist()) == q_sets[name] - p_sets[name]
    total = sum(a * b for a, b in SHAPES.values())
    assert mask.meta["candidates_q"] == int(0.08 * total)


def test_next_q_is_top2q_minus_topq_minus_p():
    harm, benign = tied_scores(4), tied_scores(5)
    mask = select_weights(harm, benign, 0.05, 0.05, method="next_q")
    assert mask.equals(next_q(harm, benign, 0.05, 0.05))
    for name, (r, c) in SHAPES.items():
        n = r * c
        q1, q2 = ref_top(-harm[name], int(0.05 * n)), ref_top(-harm[name], int(0.1 * n))
        assert set(mask.indices[name].tolist()) == q2 - q1 - ref_top(benign[name], int(0.05 * n))


def test_neg_prune_false_ranks_scores_as_they_are():
    harm, benign = tied_scores(6), tied_scores(7)
    mask = select_weights(harm, benign, 0.05, 0.1, neg_prune=False)
    name = "m.layers.0.b"
    expected = ref_top(harm[name], int(0.1 * 99 * 36)) - ref_top(benign[name], int(0.05 * 99 * 36))
    assert set(mask.indices[name].tolist()) == expected


def test_top_sets_nested_and_deterministic():
    harm = tied_scores(8)
    a, _ = top_sets(harm, 0.05, negate=True)
    b, _ = top_sets(harm, 0.1, negate=True)
    c, _ = top_sets(harm, 0.1, negate=True)
    for k in a:
        assert set(a[k].tolist()) <= set(b[k].tolist())
        assert torch.equal(b[k], c[k])


def test_zero_candidate_matrices_warn_once_with_count():
    harm, benign = tied_scores(0), tied_scores(1)
    # 12*36 = 432 entries: q = 2e-3 gives int(0.86) = 0 there, 7 in the 3564-entry matrices.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mask = select_weights(harm, benign, 1e-3, 2e-3)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and msgs[0].startswith("2 of 4 weight matrices round to zero")
    assert mask.meta["zero_candidate_matrices"] == 2
    assert mask.counts()["m.layers.0.a"] == 0 and mask.counts()["m.layers.0.b"] > 0


def test_nan_scores_refused():
    harm, benign = tied_scores(0), tied_scores(1)
    harm["m.layers.0.a"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        select_weights(harm, benign, 0.01, 0.1)


def test_scores_from_different_models_refused():
    with pytest.raises(MaskMismatchError, match="same model"):
        select_weights(tied_scores(0, "a"), tied_scores(1, "b"), 0.01, 0.1)


# -- the mask on a model ------------------------------------------------------------------------
def test_apply_zeroes_exactly_the_mask_and_restores_bit_identical(model, scores):
    harm, benign = scores
    mask = select_weights(harm, benign, 0.01, 0.05)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    linears = decoder_linears(model)
    handle = mask.apply(model)
    for name, mod in linears.items():
        w, w0 = mod.weight.detach().reshape(-1), before[f"{name}.weight"].reshape(-1)
        idx = mask.indices[name]
        assert bool((w[idx] == 0).all())
        keep = torch.ones_like(w, dtype=torch.bool)
        keep[idx] = False
        assert torch.equal(w[keep], w0[keep])
    others = [k for k in before if not any(k == f"{n}.weight" for n in linears)]
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in others)
    with pytest.raises(RuntimeError, match="already applied"):
        mask.apply(model)
    handle.restore()
    after = model.state_dict()
    assert all(torch.equal(after[k].view(torch.int32), before[k].view(torch.int32))
               for k in before if after[k].dtype == torch.float32)
    with pytest.raises(RuntimeError, match="not applied"):
        mask.restore(model)


def test_applied_context_restores_on_error(model, scores):
    mask = select_weights(*scores, 0.01, 0.05)
    w = model.model.layers[1].mlp.down_proj.weight
    before = w.detach().clone()
    with pytest.raises(KeyError):
        with applied(model, mask):
            assert not torch.equal(w, before)
            raise KeyError("boom")
    assert torch.equal(w, before)


def test_save_load_roundtrip(tmp_path, model, scores):
    mask = select_weights(*scores, 0.01, 0.05, meta={"note": "x"})
    path = mask.save(tmp_path / "masks" / "btap")
    assert path.name == "btap.safetensors" and path.with_suffix(".json").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["btap.json", "btap.safetensors"]  # no temp files
    loaded = Mask.load(path)
    assert loaded.equals(mask) and loaded.digest() == mask.digest()
    assert loaded.fingerprint == mask.fingerprint and loaded.shapes == mask.shapes
    assert loaded.meta == mask.meta
    with applied(model, loaded):
        pass
    (tmp_path / "junk.safetensors").write_bytes(b"not a mask")
    with pytest.raises(Exception):
        Mask.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="no mask"):
        Mask.load(tmp_path / "missing")


def test_mask_refuses_another_model(scores):
    mask = select_weights(*scores, 0.01, 0.05)
    with pytest.raises(MaskMismatchError, match="fingerprint"):
        mask.apply(tiny_llama(seed=1))
    with pytest.raises(MaskMismatchError, match="fingerprint"):
        mask.apply(tiny_llama(hidden=48, heads=4))


def test_mask_refuses_a_finetune_of_the_same_base(model, scores):
    """Same embeddings and norms (same fingerprint) but different projection weights."""
    mask = select_weights(*scores, 0.01, 0.05)
    other = tiny_llama()
    with torch.no_grad():
        for mod in decoder_linears(other).values():
            mod.weight.add_(0.01)
    assert model_fingerprint(other) == mask.fingerprint
    with pytest.raises(MaskMismatchError, match="another fine-tune"):
        mask.apply(other)


def test_same_seed_and_data_same_mask(tok, data):
    harm, benign = data
    cfg = PruneConfig(p=0.01, q=0.05)
    a = prune_btap(tiny_llama(seed=0), tok, harm, benign, cfg, batch_size=3, progress=False)
    b = prune_btap(tiny_llama(seed=0), tok, harm, benign, cfg, batch_size=3, progress=False)
    c = prune_btap(tiny_llama(seed=3), tok, harm, benign, cfg, batch_size=3, progress=False)
    assert a.equals(b) and a.digest() == b.digest() and a.count() > 0
    assert not a.equals(c)
    assert a.meta["config"] == cfg.to_dict()


def test_prune_btap_equals_scores_then_select(model, tok, data, scores):
    harm, benign = data
    cfg = PruneConfig(p=0.02, q=0.05, scope="global")
    mask = prune_btap(model, tok, harm, benign, cfg, progress=False)
    assert mask.equals(select_weights(*scores, 0.02, 0.05, scope="global"))


def test_sparsity_report_and_realised_fraction(model, scores):
    mask = select_weights(*scores, 0.01, 0.05)
    rep = mask.sparsity_report(model)
    total = sum(p.numel() for p in model.parameters())
    dl = sum(m.weight.numel() for m in decoder_linears(model).values())
    assert rep["count"] == mask.count() > 0
    assert rep["fraction_of_all_params"] == pytest.approx(mask.count() / total)
    assert mask.realised_fraction(model) == pytest.approx(mask.count() / total)
    assert rep["fraction_of_decoder_linear_weights"] == pytest.approx(mask.count() / dl)
    assert sum(r["count"] for r in rep["by_module_type"].values()) == mask.count()
    assert sum(r["count"] for r in rep["by_layer"].values()) == mask.count()
    assert set(rep["by_layer"]) == {"0", "1"}
    assert sum(r["numel"] for r in rep["by_module_type"].values()) == dl
    base_zeros = rep["zeros_now_in_decoder_linears"]
    with applied(model, mask):
        assert mask.sparsity_report(model)["zeros_now_in_decoder_linears"] == base_zeros + mask.count()


def test_random_like_same_counts_and_seeded(model, scores):
    mask = select_weights(*scores, 0.01, 0.05)
    r1, r2, r3 = (Mask.random_like(mask, model, seed=s) for s in (0, 0, 1))
    assert r1.counts() == mask.counts()
    assert r1.equals(r2) and not r1.equals(r3) and not r1.equals(mask)
    with applied(model, r1):
        pass


def test_intersection(scores):
    harm, benign = scores
    a = select_weights(harm, benign, 0.01, 0.1)
    b = select_weights(harm, benign, 0.01, 0.05)
    both = intersection_of([a, b])
    for k in a.indices:
        assert set(both.indices[k].tolist()) == set(a.indices[k].tolist()) & set(b.indices[k].tolist())
    assert both.equals(b)  # top-q at 0.05 is nested in top-q at 0.1
    odd = Mask(b.indices, b.shapes, "other")
    with pytest.raises(MaskMismatchError, match="different models"):
        intersection_of([a, odd])


def test_snip_rowwise(scores):
    harm, _ = scores
    mask = snip_rowwise(harm, 0.25)
    for name, s in harm.items():
        rows, cols = s.shape
        k = int(cols * 0.25)
        idx = mask.indices[name]
        assert idx.numel() == rows * k
        for r in (0, rows - 1):
            row = s[r].tolist()
            expected = set(sorted(range(cols), key=lambda j: (row[j], j))[:k])
            assert {int(i) % cols for i in idx if int(i) // cols == r} == expected
    top = snip_rowwise(harm, 0.25, largest=True)
    name = next(iter(harm))
    row = harm[name][0].tolist()
    cols = len(row)
    assert {int(i) for i in top.indices[name] if int(i) < cols} == set(
        sorted(range(cols), key=lambda j: (-row[j], j))[:int(cols * 0.25)])


def test_wei_set_difference(model, tok, data):
    refusals = [Example(prompt=e.prompt, response="I cannot help with that.", kind="refusal") for e in data[0]]
    mask = wei_set_difference(model, tok, refusals, data[1], p=0.02, q=0.05, progress=False)
    assert mask.meta["method"] == "wei_set_difference"
    assert mask.meta["neg_prune"] is False
    assert mask.meta["harm_scores"]["score"] == "abs" and mask.meta["benign_scores"]["score"] == "abs"
    ref_h = compute_scores(model, tok, refusals, score="abs", role="prune", progress=False)
    ref_b = compute_scores(model, tok, data[1], score="abs", role="preserve", progress=False)
    assert mask.equals(select_weights(ref_h, ref_b, 0.02, 0.05, neg_prune=False))


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("p,q", [(0.1, 0), (0.1, 1.0), (-1e-5, 0.1), (1.0, 0.1), (0.1, 2), (0.1, float("nan"))])
def test_config_rejects_p_q_outside_unit_interval(p, q):
    with pytest.raises(ValueError, match="must be a fraction"):
        PruneConfig(p=p, q=q)
    with pytest.raises(ValueError, match="must be a fraction"):
        select_weights(tied_scores(0), tied_scores(1), p, q)


def test_p_zero_protects_nothing():
    """p = 0 (the p sweep's end point) selects the plain top-q of the harmful scores."""
    harm, benign = tied_scores(0), tied_scores(1)
    plain = select_weights(harm, benign, 0.0, 0.25)
    q_sets, _ = top_sets(harm, 0.25, negate=True)
    assert plain.count() == sum(int(v.numel()) for v in q_sets.values())
    assert plain.count() >= select_weights(harm, benign, 0.5, 0.25).count()


def test_config_validation_and_dict_roundtrip():
    cfg = PruneConfig(p=1e-3, q=1e-4, scope="global", layers=[0, 1])
    assert cfg.layers == (0, 1) and cfg.negate is True
    assert PruneConfig.from_dict(cfg.to_dict()) == cfg
    assert PruneConfig(score="abs").negate is False
    with pytest.raises(ValueError, match="unknown PruneConfig keys"):
        PruneConfig.from_dict({"p": 0.1, "q": 0.1, "sparsity": 3})
    with pytest.raises(ValueError, match="scope must be one of"):
        PruneConfig(scope="per_row")
    with pytest.raises(ValueError, match="method must be one of"):
        PruneConfig(method="magic")


def test_prune_btap_bad_data_fails_before_scoring(model, tok, data):
    harm, benign = data
    with pytest.raises(ValueError, match="empty calibration set for role='preserve'"):
        prune_btap(model, tok, harm, [], PruneConfig(p=0.01, q=0.05), progress=False)
    bad = benign[:1] + [Example(prompt="Hello?", response="", kind="benign")]
    with pytest.raises(ValueError, match="example 1 .*empty response"):
        prune_btap(model, tok, harm, bad, PruneConfig(p=0.01, q=0.05), progress=False)


def test_prune_btap_model_without_decoder_layers(tok, data):
    with pytest.raises(ValueError, match="no decoder layers found"):
        prune_btap(torch.nn.Sequential(torch.nn.Linear(3, 3)), tok, *data, PruneConfig(p=0.01, q=0.05),
                   progress=False)


def test_overlap_against_its_chance_level():
    from replication.pruning import overlap
    a = {"m": torch.tensor([0, 1, 2, 3]), "n": torch.tensor([5])}
    b = {"m": torch.tensor([2, 3, 4, 5, 6, 7, 8, 9])}
    o = overlap(a, b, {"m": 16, "n": 10})
    assert (o.a, o.b, o.intersection) == (5, 8, 2)
    assert o.expected == pytest.approx(4 * 8 / 16)          # matrix n: nothing of B there
    assert o.inside == pytest.approx(2 / 5) and o.recall == pytest.approx(2 / 8)
    assert o.jaccard == pytest.approx(2 / 11) and o.jaccard_chance == pytest.approx(2 / (13 - 2))
    same = overlap(b, b, {"m": 16})
    assert same.jaccard == 1.0 and same.inside == 1.0
