"""environment.yml (conda/Binder) and pyproject.toml must describe one environment."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> dict[str, Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def _environment_requirements() -> dict[str, Requirement]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {Requirement(r).name.lower(): Requirement(r) for r in pip if not r.startswith("-e")}


def test_same_packages():
    py, env = _pyproject_requirements(), _environment_requirements()
    assert set(py) == set(env), f"only in pyproject: {set(py) - set(env)}; only in environment.yml: {set(env) - set(py)}"


def test_same_version_constraints():
    py, env = _pyproject_requirements(), _environment_requirements()
    for name, req in py.items():
        other = env[name]
        if name == "torch":
            # environment.yml pins the CPU wheel the Makefile installs; pyproject must admit it
            pinned = Version(str(other.specifier).removeprefix("=="))
            assert req.specifier.contains(pinned), f"pyproject's torch{req.specifier} rejects the pinned {pinned}"
            continue
        assert req.specifier == other.specifier, f"{name}: pyproject {req.specifier} vs environment.yml {other.specifier}"


def test_makefile_pins_the_same_torch():
    pinned = str(_environment_requirements()["torch"].specifier).removeprefix("==")
    assert re.search(rf"TORCH\s*\?=\s*torch=={re.escape(pinned)}", (ROOT / "Makefile").read_text())


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [l.strip() for l in ci.splitlines() if l.strip() and not l.strip().startswith("#")]
    assert commands[-1] == "exec make test"
    assert "make test" in (ROOT / "README.md").read_text()
