"""Dependencies run one way: data (`data`, `real_data`) -> models -> method / evaluation -> experiments.

Each check imports a module in a fresh interpreter and looks at what else got imported."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_after(module: str) -> set[str]:
    code = (f"import json, sys, {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('replication'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_prompt_loaders_import_no_model_code():
    seen = _imported_after("replication.real_data")
    assert not seen & {"replication.models", "replication.smollm2", "replication.safety_sft",
                       "replication.self_generated", "replication.generation"}


def test_user_data_reader_imports_no_model_code():
    seen = _imported_after("replication.user_data")
    assert seen <= {"replication", "replication.data", "replication.user_data"}


@pytest.mark.parametrize("module", ["replication.models", "replication.smollm2"])
def test_model_loading_imports_no_recipe_and_no_data(module):
    seen = _imported_after(module)
    assert not seen & {"replication.safety_sft", "replication.self_generated", "replication.real_data"}


def test_experiments_register_the_safety_builder():
    code = ("import replication.experiments, replication.models as m; "
            "print('smollm2-135m-instruct-safety' in m.BUILDERS)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
