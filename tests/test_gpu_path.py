"""The GPU path, checked on the CPU: device choice, the `paper` scale reaching the experiments,
every size settable with `-p`, and results that record where and how they were computed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from replication import device as dev
from replication import runner
from replication.experiments import compactness, dissociation, generality
from replication.models import PRESETS, canonical_name, resolve_preset
from replication.scales import PAPER_CALIBRATION, PAPER_MIN_EVAL, apply_overrides

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()


def test_three_spellings_of_a_model_are_one_preset(tmp_path):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}))
    spellings = ["llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", str(folder)]
    presets = [resolve_preset(s) for s in spellings]
    assert {p.name for p in presets} == {"llama-3.1-8b-instruct"}
    assert {(p.counterpart, p.chat_format, p.p, p.q) for p in presets} == {
        (PRESETS["llama-3.1-8b-instruct"].counterpart, "chat", PRESETS["llama-3.1-8b-instruct"].p,
         PRESETS["llama-3.1-8b-instruct"].q)}
    assert canonical_name(spellings[1]) == "llama-3.1-8b-instruct"


@pytest.mark.skipif(not NO_CUDA, reason="checks the no-CUDA error")
def test_device_cuda_without_cuda_fails_at_once_with_one_line(tmp_path):
    env = dict(os.environ, HARMPRUNE_RESULTS=str(tmp_path / "results"))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "replication", "run", "compactness", "--device", "cuda"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: device 'cuda'") and "--device cpu" in lines[0]
    assert time.perf_counter() - t0 < 60 and not (tmp_path / "results").exists()   # nothing ran


def test_device_auto_is_the_cpu_here_and_unknown_devices_are_named():
    if NO_CUDA:
        assert dev.resolve_device("auto") == "cpu"
        assert dev.plan("hub", "auto").to_dict() == {"device": "cpu", "dtype": "float32", "device_map": None,
                                                     "asked": "auto", "why": "no CUDA GPU here"}
    with pytest.raises(dev.DeviceError, match="unknown device 'tpu'"):
        dev.resolve_device("tpu")


def test_bf16_only_for_hub_models_on_cuda():
    assert dev.weight_dtype("hub", "cuda") is torch.bfloat16 and dev.weight_dtype("hub", "cuda:1") is torch.bfloat16
    assert dev.weight_dtype("hub", "cpu") is torch.float32
    assert dev.weight_dtype("organism", "cuda") is torch.float32 and dev.weight_dtype("smollm2", "cuda") is torch.float32


def test_a_model_too_big_for_one_gpu_is_sharded(monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(dev, "fits_one_gpu", lambda n, d="cuda": n < 10 * 2**30)
    small = dev.plan("hub", "auto", n_bytes=2 * 2**30)
    big = dev.plan("hub", "auto", n_bytes=64 * 2**30)
    assert (small.device, small.dtype, small.device_map) == ("cuda", "bfloat16", None)
    assert (big.device, big.device_map) == ("auto", "auto") and "device_map='auto'" in big.why
    assert dev.plan("organism", "cuda").dtype == "float32"


def test_paper_scale_sizes():
    real = compactness.CompactnessConfig.for_scale("smollm2-135m-instruct", "paper")
    assert real.n_calibration == PAPER_CALIBRATION == 412
    assert real.n_eval * 5 >= PAPER_MIN_EVAL and real.n_eval_benign * 8 >= PAPER_MIN_EVAL
    assert real.n_generate >= PAPER_MIN_EVAL and real.n_qa is None and real.max_new_tokens == 256
    assert real.sources == "paper" and real.real_data().sources == "paper" and real.real_data().n_pool == 2 * 412
    org = compactness.CompactnessConfig.for_scale("organism-aligned", "paper")
    assert org.n_calibration == 412 and org.n_eval * 5 >= PAPER_MIN_EVAL
    assert dissociation.DissociationConfig.for_scale("smollm2-135m-instruct", "paper").n_calibration == 412
    assert generality.GeneralityConfig.for_scale("smollm2-135m-instruct", "paper").n_per_category * 5 >= 412
    for scale in ("smoke", "full", "paper"):
        assert compactness.CompactnessConfig.for_scale("organism-aligned", scale, device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="scale must be one of smoke, full, paper"):
        compactness.CompactnessConfig.for_scale("organism-aligned", "huge")


def test_a_typo_in_an_override_is_an_error_not_ignored():
    cfg = compactness.CompactnessConfig()
    with pytest.raises(ValueError, match="no field.* n_evl"):
        apply_overrides(cfg, {"n_evl": 3})


def test_every_notebook_declares_device_and_config():
    from replication.findings import FINDINGS
    for f in FINDINGS.values():
        declared = runner.notebook_parameters(runner.NOTEBOOK_DIR / f.notebook)
        assert "device" in declared, f.notebook
        if f.config_class is not None:
            assert "config" in declared and declared["config"] == "{}", f.notebook


def test_any_config_field_reaches_the_notebook_through_p():
    params = runner.notebook_params("compactness", "smollm2-135m-instruct",
                                    {"n_generate": 100, "max_new_tokens": 64, "seeds": [0, 1, 2, 3]},
                                    scale="paper", device="cpu")
    assert params["scale"] == "paper" and params["device"] == "cpu" and params["seeds"] == [0, 1, 2, 3]
    assert params["config"] == {"n_generate": 100, "max_new_tokens": 64}
    # ... and the notebook's call turns them into the experiment's config
    cfg = compactness.CompactnessConfig.for_scale("smollm2-135m-instruct", params["scale"], device=params["device"],
                                                  **params["config"])
    assert (cfg.n_generate, cfg.max_new_tokens, cfg.n_calibration, cfg.device) == (100, 64, 412, "cpu")
    with pytest.raises(runner.RunError, match="no parameter.*n_gnerate.*or any field of CompactnessConfig"):
        runner.notebook_params("compactness", "organism-aligned", {"n_gnerate": 1})
    with pytest.raises(runner.RunError, match="scale must be one of"):
        runner.notebook_params("compactness", "organism-aligned", {}, scale="large")


def test_a_result_records_device_dtype_judge_and_why():
    from test_compactness import TINY, tiny_data, tiny_loaded
    loaded = tiny_loaded()
    cfg = compactness.CompactnessConfig.for_scale(TINY, "smoke", qs=[0.05], seeds=[0], judge="reference_nll",
                                                  min_refusals=2, ablations=False, refusal_ablation=False)
    res = compactness.run(cfg, loaded=loaded, data=tiny_data(loaded), write=False, progress=False)
    assert res["placement"]["device"] == "cpu" and res["placement"]["dtype"] == "float32" and res["placement"]["why"]
    assert res["judge"] == "reference_nll" and res["hardware"]["cuda"] == torch.cuda.is_available()
    from replication.task_data import choose_harm_judge
    used, why = choose_harm_judge("auto")
    assert used in ("reference_nll", "strongreject") and why.startswith("auto:")


def test_gpu_check_script_exits_at_once_without_cuda():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert script.exists() and os.access(script, os.X_OK)
    if not NO_CUDA:
        pytest.skip("this machine has CUDA: the script would run for real")
    t0 = time.perf_counter()
    out = subprocess.run([str(script)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode != 0 and "no CUDA" in out.stderr and time.perf_counter() - t0 < 60


def test_gpu_check_dry_run_lists_its_steps():
    out = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    for step in ("pytest -m gpu tests", "benchmarks/scoring.py --device cuda"):
        assert step in out.stdout


# ------------------------------------------------------------------------------------------------
# on a CUDA machine only (benchmarks/gpu_check.sh runs these)
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_a_hub_model_loads_in_bf16_on_cuda(tmp_path):
    from tiny_models import tiny_llama, tiny_tokenizer

    from replication.models import load_model
    tok = tiny_tokenizer()
    tiny_llama(len(tok), seed=1).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), device="auto")
    param = next(loaded.model.parameters())
    assert param.device.type == "cuda" and param.dtype is torch.bfloat16
    assert loaded.placement["device"] == "cuda" and loaded.placement["dtype"] == "bfloat16"


@pytest.mark.gpu
def test_scores_of_a_bf16_model_accumulate_in_fp32_on_cuda():
    from tiny_models import tiny_examples, tiny_llama, tiny_tokenizer

    from replication.scoring import compute_scores
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), seed=2).to("cuda", torch.bfloat16)
    ex = tiny_examples(6, kind="harmful")
    for score in ("signed", "abs"):
        s = compute_scores(model, tok, ex, score=score, role="prune", batch_size=3, progress=False)
        assert all(v.dtype is torch.float32 and torch.isfinite(v).all() for v in s.values())
        ref = compute_scores(model.float(), tok, ex, score=score, role="prune", batch_size=3, progress=False)
        model.to(torch.bfloat16)
        k = next(iter(s))
        assert torch.corrcoef(torch.stack([s[k].flatten().cpu(), ref[k].flatten().cpu()]))[0, 1] > 0.95


@pytest.mark.gpu
def test_finding1_smoke_on_cuda_with_a_random_weight_model():
    from test_compactness import TINY, tiny_data, tiny_loaded
    loaded = tiny_loaded()
    loaded.model.to("cuda")
    cfg = compactness.CompactnessConfig.for_scale(TINY, "smoke", qs=[0.02, 0.05], seeds=[0, 1], judge="reference_nll",
                                                  min_refusals=2)
    res = compactness.run(cfg, loaded=loaded, data=tiny_data(loaded), write=False, progress=False)
    assert res["placement"]["device"].startswith("cuda") and res["hardware"]["cuda"]
    assert {r["arm"] for r in res["runs"]} >= {"btap", "random"}
    assert all(0.0 <= r["values"]["harm_prefill"] <= 1.0 for r in res["runs"])
