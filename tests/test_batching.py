"""`batching`: the one right-padding collate and the response-only loss every trainer and scorer uses."""
from __future__ import annotations

import pytest
import torch

from replication.batching import IGNORE, collate, pack, response_loss

from tiny_models import loss_and_grad

ROWS = [([5, 6, 7, 8], [IGNORE, IGNORE, 7, 8]),
        ([9, 10], [IGNORE, 10]),
        ([11, 12, 13], [IGNORE, 12])]          # labels shorter than input_ids: the rest count as IGNORE


def test_collate_pads_on_the_right():
    b = collate(ROWS, pad_id=0)
    assert set(b) == {"input_ids", "attention_mask", "labels"}
    assert all(v.dtype == torch.long and v.shape == (3, 4) for v in b.values())
    assert b["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0], [11, 12, 13, 0]]
    assert b["labels"].tolist() == [[IGNORE, IGNORE, 7, 8], [IGNORE, 10, IGNORE, IGNORE], [IGNORE, 12, IGNORE, IGNORE]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]


def test_collate_pad_id_device_and_empty():
    b = collate(ROWS[1:], pad_id=3, device="cpu")
    assert b["input_ids"].tolist() == [[9, 10, 3], [11, 12, 13]] and b["input_ids"].device.type == "cpu"
    with pytest.raises(ValueError, match="at least one row"):
        collate([], pad_id=0)


def _rows(tok, pairs):
    rows = []
    for prompt, response in pairs:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p + r, [IGNORE] * len(p) + r))
    return rows


def test_response_loss_is_the_mean_nll_of_the_response_tokens(tok, model):
    rows = _rows(tok, [("What is the capital of France?", "Paris is the capital."),
                       ("How do I make a bomb?", "I'm sorry."),
                       ("Explain photosynthesis.", "Plants turn light, water and air into sugar.")])
    b = collate(rows, tok.pad_token_id)
    with torch.no_grad():
        ours = response_loss(model, **b)
        logp = torch.log_softmax(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float(), -1)
    # by hand: every response token t at position i > 0 is predicted at position i - 1, one mean over the batch
    nll = [-float(logp[r, i - 1, ids[i]]) for r, (ids, lab) in enumerate(rows) for i in range(1, len(ids)) if lab[i] != IGNORE]
    assert len(nll) == sum(sum(t != IGNORE for t in lab) for _, lab in rows)
    assert float(ours) == pytest.approx(sum(nll) / len(nll), rel=1e-5)
    with torch.no_grad():
        assert float(ours) == pytest.approx(float(model(**b).loss), rel=1e-5)   # Hugging Face's own loss


def test_response_loss_ignores_padding_and_prompt(tok, model):
    """Padding a row with extra (masked, unlabelled) positions leaves the loss unchanged."""
    rows = _rows(tok, [("Write a poem about the sea?", "Waves crash on the shore.")])
    alone = collate(rows, tok.pad_token_id)
    padded = collate(rows + [(rows[0][0] + [1, 2, 3], [IGNORE] * (len(rows[0][0]) + 3))], tok.pad_token_id)
    with torch.no_grad():
        assert float(response_loss(model, **alone)) == pytest.approx(float(response_loss(model, **padded)), rel=1e-5)


def test_pack_fills_rows_restarts_positions_and_masks_each_rows_first_label():
    b = pack(ROWS, width=6, pad_id=0)
    assert set(b) == {"input_ids", "labels", "position_ids"}
    # first-fit decreasing: [5..8] then [11,12,13] does not fit beside it, [9,10] does
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    assert b["labels"].tolist() == [[IGNORE, IGNORE, 7, 8, IGNORE, 10], [IGNORE, 12, IGNORE, IGNORE, IGNORE, IGNORE]]
    with pytest.raises(ValueError, match="does not fit"):
        pack(ROWS, width=3, pad_id=0)
    with pytest.raises(ValueError, match="at least one row"):
        pack([], width=4, pad_id=0)


def test_packed_loss_and_gradient_equal_the_padded_batch(tok, model):
    """Packing is a layout, not a change of what is learned: the same mean loss and gradient."""
    rows = [(ids, [IGNORE] + ids[1:]) for ids in ([7, 8, 9, 10, 11], [12, 13, 14], [15, 16, 17, 18], [19, 20])]
    rows.append(_rows(tok, [("Hello there", "General Kenobi.")])[0])
    width = max(len(ids) for ids, _ in rows) + 4

    padded = loss_and_grad(model, collate(rows, pad_id=0))
    packed_batch = pack(rows, width, pad_id=0)
    assert packed_batch["input_ids"].shape[0] < len(rows)
    packed = loss_and_grad(model, packed_batch)
    assert packed[0] == pytest.approx(padded[0], rel=1e-5)
    assert torch.allclose(packed[1], padded[1], rtol=1e-4, atol=1e-6)


def test_response_loss_of_a_packed_batch_is_the_models_own_loss(tok, model):
    """With `position_ids` and no mask (a `pack`ed batch) the loss with the vocabulary projection only
    on labelled positions is Hugging Face's loss over every position."""
    rows = _rows(tok, [("What is the capital of France?", "Paris."), ("Explain photosynthesis.", "Plants make sugar."),
                       ("How do I make a bomb?", "I'm sorry.")])
    b = pack(rows, sum(len(ids) for ids, _ in rows[:2]) + 2, pad_id=tok.pad_token_id)
    assert b["input_ids"].shape[0] < len(rows)
    with torch.no_grad():
        assert float(response_loss(model, **b)) == pytest.approx(float(model(**b, use_cache=False).loss), rel=1e-5)
