"""The positive control's pieces: its planted data, the planted set, a sparse fine-tune that moves
only that set, and the overlap measure."""
import pytest
import torch

from replication.experiments import positive_control as PC
from replication.models import LoadedModel, resolve_preset
from replication.pruning import Mask
from replication.task_data import TaskData


def test_planted_test_prompts_are_new_combinations_and_people():
    cfg = PC.PlantConfig()
    train, refusals, test = PC.planted_examples(cfg)
    combo = lambda e: (e.meta["slots"]["k1"], e.meta["slots"]["k2"])
    assert not {combo(e) for e in train} & {combo(e) for e in test}
    assert not {e.meta["slots"]["copied"] for e in train} & {e.meta["slots"]["copied"] for e in test}
    assert len({combo(e) for e in test}) == cfg.held_out_combinations
    # every answer carries its own elements (the organism judge reads them), refusals pair the prompts
    assert all(all(x in e.response for x in e.meta["elements"]) for e in train + test)
    assert [e.prompt for e in refusals] == [e.prompt for e in train]
    # the knowledge is a function of the request: the same target always takes the same substance
    by_target = {}
    for e in train + test:
        by_target.setdefault(e.meta["slots"]["k1"], set()).add(e.meta["slots"]["v1"])
    assert all(len(v) == 1 for v in by_target.values())


def test_planted_set_takes_the_fraction_of_every_matrix(model):
    S = PC.planted_set(model, 0.05, seed=0)
    for name, idx in S.indices.items():
        n = int(torch.tensor(S.shapes[name]).prod())
        assert idx.numel() == int(0.05 * n)
    assert S.indices.keys() == PC.planted_set(model, 0.05, seed=0).indices.keys()


def test_plant_moves_only_the_planted_set(model, tok, benign_examples):
    train, refusals, _ = PC.planted_examples(PC.PlantConfig())
    data = TaskData(model="tiny", kind="organism", categories=("planted",), families=("f",), harmful_pool=train,
                    benign_pool=benign_examples, control_pool=[], refusal_pool=refusals, test_harmful=[],
                    test_benign=[], harm_judge=None)
    loaded = LoadedModel("tiny", model, tok, resolve_preset("organism-aligned"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned, S, log = PC.plant(loaded, data, PC.PlantConfig(steps=3, fraction=0.05, batch_size=4), progress=False)
    assert log["moved_outside"] == 0 and log["moved_inside"] > 0
    after = tuned.state_dict()
    untouched = [k for k in before if "proj" not in k]   # embeddings and norms are frozen
    assert all(torch.equal(before[k], after[k]) for k in untouched)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # the original is left alone


def test_overlap_against_chance():
    S = Mask({"w": torch.arange(10)}, {"w": (10, 10)}, None, {})
    inside = Mask({"w": torch.arange(5)}, {"w": (10, 10)}, None, {})
    outside = Mask({"w": torch.arange(50, 55)}, {"w": (10, 10)}, None, {})
    assert PC.overlap(inside, S) == pytest.approx({"count": 5, "inside": 1.0, "inside_chance": 0.1, "recall": 0.5})
    assert PC.overlap(outside, S)["inside"] == 0.0
