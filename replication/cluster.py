"""Findings x models x parameters as jobs on a cluster (Slurm) or as local processes, via submitit.

Each (notebook, model, parameters) is one job that runs `runner.run_notebook` in its own process.
Before anything is submitted the runner's content cache is asked, so a re-submission of the same
command runs only what changed; each failed job is reported with the runner's one-line error
(notebook and cell) and the path of its log. The book builds from whatever results exist.

    python -m replication run all --models organism-aligned smollm2-135m-instruct --executor slurm \\
        --slurm-partition gpu --gpus-per-job 1 --timeout-min 240 --mem-gb 64

`local` runs the same jobs as local processes (submitit's LocalExecutor, at most `max_parallel` at
once): what the tests use, and a way to use a many-core machine.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .findings import Finding
from .paths import REPO_ROOT

EXECUTORS = ("local", "slurm")
POLL_S = 1.0


@dataclass(frozen=True)
class Job:
    """One notebook on one model with its parameters: everything the job's process needs."""

    finding: Finding
    model: str
    params: dict = field(default_factory=dict)
    scale: str = "full"
    device: str = "auto"
    notebook_dir: Path | None = None
    force: bool = False

    @property
    def label(self) -> str:
        return f"{self.finding.notebook} on {self.model} ({self.scale})"


@dataclass
class SlurmSettings:
    """What a Slurm job asks for (submitit's `slurm_*` parameters)."""

    partition: str | None = None
    gpus_per_job: int = 1
    timeout_min: int = 240
    mem_gb: int = 64
    cpus_per_job: int = 8


@dataclass
class JobOutcome:
    job: Job
    status: str                 # "cached" (not submitted), "ok", "failed"
    output: Path | None = None
    seconds: float = 0.0
    error: str | None = None    # the runner's one-line error
    log: Path | None = None     # the job's stderr log (submitit's folder)
    job_id: str | None = None


def jobs_for(target: str, models: Sequence[str], params: dict[str, Any] | None = None, *, scale: str = "full",
             device: str = "auto", force: bool = False) -> list[Job]:
    """One job per (finding, model): `target` is a finding key or `all` (every notebook that exists).
    Models and parameters are checked here, before anything is submitted."""
    from .findings import FINDINGS, finding
    from .models import canonical_name, resolve_preset
    from . import runner
    from .runner import RunError, available_findings, notebook_params
    if target == "all" and params:
        raise RunError("-p parameters go with a single finding (e.g. `run compactness -p q=1e-3`), not with `all`")
    findings_ = available_findings() if target == "all" else [finding(target)]
    if target == "all":
        missing = [f.notebook for f in FINDINGS.values() if f not in findings_]
        if missing:
            print(f"note: not written yet, skipped: {', '.join(missing)}", file=sys.stderr)
    jobs = []
    filed: dict[tuple[str, str], str] = {}   # (finding, results folder) -> the model whose job fills it
    for model in models:
        resolve_preset(model)
        name = canonical_name(model)
        for f in findings_:
            notebook_params(f, name, params, scale=scale, device=device)   # a bad -p fails now, once
            where = (f.key, f.results_folder(name, params))
            if where in filed:   # a pair finding: both members name the same run
                print(f"note: {f.key} on {name} is the same pair run as on {filed[where]}: submitted once",
                      file=sys.stderr)
                continue
            filed[where] = name
            jobs.append(Job(f, name, dict(params or {}), scale, device, notebook_dir=runner.NOTEBOOK_DIR, force=force))
    return jobs


def run_job(job: Job) -> dict[str, Any]:
    """The function each job's process runs (module level, so submitit can pickle it by name)."""
    from .runner import run_notebook
    outcome = run_notebook(job.finding, job.model, job.params, scale=job.scale, force=job.force, progress=False,
                           device=job.device, notebook_dir=job.notebook_dir)
    return {"output": str(outcome.output), "cached": outcome.cached, "seconds": outcome.seconds}


def executor_for(kind: str, folder: Path, *, max_parallel: int = 2, slurm: SlurmSettings | None = None):
    """A submitit executor of `kind` writing its logs under `folder`."""
    try:
        import submitit
    except ImportError as err:   # pragma: no cover - a dependency of the package
        raise RuntimeError("the cluster executors need submitit: pip install submitit") from err
    if kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=(slurm or SlurmSettings()).timeout_min)
        return ex
    if kind == "slurm":
        s = slurm or SlurmSettings()
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        params: dict[str, Any] = dict(timeout_min=s.timeout_min, mem_gb=s.mem_gb, gpus_per_node=s.gpus_per_job,
                                      cpus_per_task=s.cpus_per_job, slurm_array_parallelism=max_parallel,
                                      name="harmprune")
        if s.partition:
            params["slurm_partition"] = s.partition
        ex.update_parameters(**params)
        return ex
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}; got {kind!r}")


def pending(jobs: Sequence[Job]) -> tuple[list[Job], list[JobOutcome]]:
    """(jobs to submit, outcomes of those the content cache already holds)."""
    from .runner import cache_state
    todo, done = [], []
    for job in jobs:
        state = cache_state(job.finding, job.model, job.params, scale=job.scale, device=job.device,
                            notebook_dir=job.notebook_dir)
        if state.fresh and not job.force:
            done.append(JobOutcome(job, "cached", output=state.output))
        else:
            todo.append(job)
    return todo, done


def submit(jobs: Sequence[Job], kind: str = "local", *, folder: Path | None = None, max_parallel: int = 2,
           slurm: SlurmSettings | None = None, stream=None) -> list[JobOutcome]:
    """Run `jobs` through executor `kind`, at most `max_parallel` at once, and wait for all of them.
    Jobs whose results are fresh are not submitted. Returns one outcome per job, in order."""
    stream = stream if stream is not None else sys.stderr
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}; got {kind!r}")
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
    todo, cached = pending(jobs)
    for c in cached:
        print(f"  cached, unchanged: {c.job.label}", file=stream, flush=True)
    if not todo:
        print(f"{len(jobs)} job(s): all cached, nothing submitted", file=stream, flush=True)
        return _ordered(jobs, cached)
    folder = folder or REPO_ROOT / ".cache" / "submitit" / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    ex = executor_for(kind, folder, max_parallel=max_parallel, slurm=slurm)
    print(f"{len(todo)} job(s) to run through the {kind} executor ({len(cached)} cached); logs in {folder}",
          file=stream, flush=True)
    outcomes = list(cached)
    if kind == "slurm":   # the scheduler bounds parallelism (slurm_array_parallelism)
        with ex.batch():
            running = [(job, ex.submit(run_job, job), time.time()) for job in todo]
        for job, handle, t0 in running:
            outcomes.append(_collect(job, handle, t0, stream))
        return _ordered(jobs, outcomes)
    queue, running = list(todo), []
    while queue or running:
        while queue and len(running) < max_parallel:
            job = queue.pop(0)
            running.append((job, ex.submit(run_job, job), time.time()))
            print(f"  started: {job.label}", file=stream, flush=True)
        for item in [r for r in running if r[1].done()]:
            running.remove(item)
            outcomes.append(_collect(*item, stream))
        if running:
            time.sleep(POLL_S)
    return _ordered(jobs, outcomes)


def _collect(job: Job, handle: Any, t0: float, stream) -> JobOutcome:
    log = Path(str(handle.paths.stderr))
    try:
        res = handle.result()
    except Exception as err:  # noqa: BLE001 - submitit wraps the job's exception; keep its last line
        line = _last_error_line(str(err)) or type(err).__name__
        print(f"  FAILED: {job.label}: {line} (log: {log})", file=stream, flush=True)
        return JobOutcome(job, "failed", seconds=time.time() - t0, error=line, log=log, job_id=str(handle.job_id))
    print(f"  done: {job.label} -> {res['output']} ({res['seconds']:.0f} s)", file=stream, flush=True)
    return JobOutcome(job, "ok", output=Path(res["output"]), seconds=res["seconds"], log=log, job_id=str(handle.job_id))


def _last_error_line(text: str) -> str:
    """The runner's one-line error out of submitit's traceback dump (its last non-empty line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "RunError:" in ln:
            return ln.split("RunError:", 1)[1].strip()
    return lines[-1] if lines else ""


def _ordered(jobs: Sequence[Job], outcomes: list[JobOutcome]) -> list[JobOutcome]:
    by_job = {id(o.job): o for o in outcomes}
    return [by_job[id(j)] for j in jobs]


__all__ = ["Job", "JobOutcome", "SlurmSettings", "EXECUTORS", "submit", "pending", "run_job", "executor_for", "jobs_for"]
