"""Shared helpers for attnkit benchmarks: environment metadata, timing, memory, profiles, JSON.

Every benchmark script in this folder follows the same recipe (see BENCHMARKS.md):

* the implementations being compared live in one process and see the same inputs;
* each step function is warmed up, then timed in interleaved rounds (A, B, A, B, ...)
  so that clock or thermal drift hits every implementation alike; on CUDA each step is
  bracketed by CUDA events, on the CPU by ``time.perf_counter`` after a synchronise;
* the reported time is the median over all timed steps, with the spread of the
  per-round medians kept to tell a real difference from noise;
* peak memory is ``torch.cuda.max_memory_allocated`` during one step, minus what was
  allocated when the step began (so other models alive in the process do not count);
* results go to ``benchmarks/results/<name>-<device-slug>-<date>.json`` together with
  the device, the software versions, the attnkit commit and the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

Step = Callable[[int], None]  # one step of an implementation; the argument picks the input set


# -- device and environment ---------------------------------------------------------------
def pick_device(name: str | None) -> torch.device:
    """``"cuda"``, ``"cuda:1"``, ``"cpu"`` or ``None`` (CUDA when present, else CPU).

    Raises:
        SystemExit: CUDA was asked for and is not available.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} asked for, but torch {torch.__version__} sees no CUDA device")
    return device


def device_name(device: torch.device) -> str:
    """The marketing name of the GPU, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return model or platform.processor() or "cpu"


def device_slug(device: torch.device) -> str:
    """A file-name-safe device tag: ``nvidia-h100-80gb-hbm3`` on a GPU, ``cpu`` on the CPU."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def git_commit() -> dict[str, Any]:
    """The attnkit commit being measured.

    ``ATTNKIT_COMMIT``, where set, names it (a ``git archive`` snapshot run inside another
    checkout would otherwise report that checkout's commit); else ``git rev-parse HEAD``. ``source_sha256``
    hashes every ``attnkit/**/*.py`` file, so uncommitted edits are identified too, and
    ``source_files`` gives each file's own hash, to find which file differed from a commit.
    """
    commit, dirty = os.environ.get("ATTNKIT_COMMIT"), None
    if commit is None:
        commit = "unknown"
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            status = subprocess.run(
                ["git", "status", "--porcelain", "--", "attnkit"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
            ).stdout
            dirty = bool(status.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    digest, files = hashlib.sha256(), {}
    for path in sorted((ROOT / "attnkit").rglob("*.py")):
        name, data = str(path.relative_to(ROOT)), path.read_bytes()
        digest.update(name.encode() + b"\0" + data + b"\0")
        files[name] = hashlib.sha256(data).hexdigest()[:12]
    return {"commit": commit, "dirty": dirty, "source_sha256": digest.hexdigest(), "source_files": files}


def environment(device: torch.device) -> dict[str, Any]:
    """Everything needed to tell where and how numbers were taken."""
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "device": str(device),
        "device_name": device_name(device),
        "device_slug": device_slug(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "attnkit": git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu"] = {
            "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
        }
    return env


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- timing ---------------------------------------------------------------------------------
@dataclass
class Timing:
    """Step times of one implementation, in milliseconds."""

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    round_medians_ms: list[float]
    n: int

    @property
    def spread_ms(self) -> float:
        """Largest minus smallest per-round median: differences below this are noise."""
        return max(self.round_medians_ms) - min(self.round_medians_ms)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spread_ms": self.spread_ms}


def _time_steps(step: Step, device: torch.device, iters: int, first: int) -> list[float]:
    """Milliseconds of ``iters`` consecutive steps, each timed on its own."""
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for i in range(iters):
            starts[i].record()
            step(first + i)
            ends[i].record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]
    out = []
    for i in range(iters):
        t0 = time.perf_counter()
        step(first + i)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def time_interleaved(
    steps: dict[str, Step], device: torch.device, *, warmup: int, iters: int, rounds: int,
    on_round: Callable[[dict[str, Timing]], None] | None = None,
) -> dict[str, Timing]:
    """Warm every step up, then time ``rounds`` rounds of ``iters`` steps each, alternating.

    Args:
        steps: name -> step function; ``step(i)`` runs step ``i`` (rotate inputs with it).
        warmup: untimed steps per implementation first (allocator, cuBLAS handles, autotuning).
        iters: timed steps per implementation and round.
        rounds: rounds; implementations take turns within each round.
        on_round: called after each round with the timings over the rounds finished so far
            (a script writes its results there, so a run cut short keeps the rounds it timed).

    Returns:
        name -> :class:`Timing` over all ``rounds * iters`` timed steps.
    """
    for step in steps.values():
        for i in range(warmup):
            step(i)
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in steps}
    medians: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        for name, step in steps.items():
            ms = _time_steps(step, device, iters, first=r * iters)
            samples[name] += ms
            medians[name].append(statistics.median(ms))
        if on_round is not None:
            on_round(_timings(samples, medians))
    return _timings(samples, medians)


def _timings(samples: dict[str, list[float]], medians: dict[str, list[float]]) -> dict[str, Timing]:
    return {
        name: Timing(
            median_ms=statistics.median(s),
            mean_ms=statistics.fmean(s),
            min_ms=min(s),
            max_ms=max(s),
            round_medians_ms=list(medians[name]),
            n=len(s),
        )
        for name, s in samples.items()
    }


# -- memory ---------------------------------------------------------------------------------
def time_modes(
    steps: dict[str, Step], device: torch.device, *, warmup: int, iters: int, rounds: int, label: str = ""
) -> dict[str, dict[str, Any]]:
    """Each mode's first call (compilation, for the compiled modes) timed alone, then every mode interleaved.

    A mode whose name contains ``compiled`` and whose first call raises is left out with the reason
    (a compiler failure costs one mode, not the run); any other failure is raised.

    Returns:
        ``{mode: Timing.to_dict() + first_call_s}`` for the timed modes, ``{mode: {"failed": why}}`` for the others.
    """
    first_call_s: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name in list(steps):
        synchronize(device)
        t0 = time.perf_counter()
        try:
            steps[name](0)
        except Exception as e:  # noqa: BLE001
            if "compiled" not in name:
                raise
            rows[name] = {"failed": f"{type(e).__name__}: {str(e)[:500]}"}
            print(f"   {label}{name}: FAILED, left out ({rows[name]['failed'][:200]})", flush=True)
            del steps[name]
            continue
        synchronize(device)
        first_call_s[name] = time.perf_counter() - t0
        print(f"   {label}{name}: first call {first_call_s[name]:.1f}s", flush=True)
    for name, t in time_interleaved(steps, device, warmup=warmup, iters=iters, rounds=rounds).items():
        rows[name] = {**t.to_dict(), "first_call_s": first_call_s[name]}
    return rows


def step_peak_memory(step: Step, device: torch.device) -> int | None:
    """Bytes allocated at the peak of one step above what was allocated when it began.

    Returns ``None`` off CUDA. Gradients count when the step allocates them (steps should
    leave ``.grad`` as ``None`` when they finish); weights and optimizer state made
    earlier do not.
    """
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step(0)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


# -- profiles -------------------------------------------------------------------------------
def profile_top(step: Step, device: torch.device, *, steps: int = 3, top: int = 8) -> dict[str, Any]:
    """The most expensive kernels (CUDA) or operators (CPU) of a few steps, per step.

    Returns:
        ``{"busy_ms_per_step", "host_reads_per_step", "top": [{"name", "ms_per_step",
        "calls_per_step"}, ...]}``. On CUDA ``busy_ms_per_step`` is the summed kernel time,
        which, set against the measured step time, shows how long the GPU sits idle per step
        (launch or sync bound). ``host_reads_per_step`` counts ``aten::_local_scalar_dense``
        (``.item()``, ``int(t)``, ``if t:``): on CUDA each one blocks until the GPU catches up.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.11: "Profiler clears events at the end of each cycle"
        with profile(activities=activities) as prof:
            for i in range(steps):
                step(i)
            synchronize(device)
    averages = prof.key_averages()
    reads = sum(e.count for e in averages if e.key == "aten::_local_scalar_dense")
    if device.type == "cuda":
        events = [e for e in averages if e.device_type == DeviceType.CUDA]
        cost = lambda e: e.self_device_time_total  # noqa: E731 (microseconds)
    else:
        events = [e for e in averages if e.device_type == DeviceType.CPU]
        cost = lambda e: e.self_cpu_time_total  # noqa: E731
    events.sort(key=cost, reverse=True)
    return {
        "busy_ms_per_step": sum(cost(e) for e in events) / 1e3 / steps,
        "host_reads_per_step": reads / steps,
        "top": [
            {"name": e.key[:120], "ms_per_step": cost(e) / 1e3 / steps, "calls_per_step": e.count / steps}
            for e in events[:top]
        ],
    }


# -- results --------------------------------------------------------------------------------
def results_path(name: str, env: dict[str, Any], out_dir: Path | None = None, *, suffix: str = "") -> Path:
    """``<out_dir>/<name>-<device-slug>-<YYYY-MM-DD><suffix>.json``: the file :func:`write_json` writes for ``env``."""
    out_dir = Path(out_dir) if out_dir is not None else RESULTS_DIR
    return out_dir / f"{name}-{env['device_slug']}-{env['date'][:10]}{suffix}.json"


def read_day_json(name: str, env: dict[str, Any], out_dir: Path | None = None, *, suffix: str = "") -> dict[str, Any]:
    """The JSON this benchmark wrote earlier on this device and date, or ``{}`` when there is none.

    Scripts that run in parts start from it and write what they finish back with :func:`update_day_json`,
    so parts run in separate (or concurrent) calls end up in one file. A file that does not
    parse is moved aside to ``<file>.unreadable`` (never overwritten) and ``{}`` is returned.
    """
    path = results_path(name, env, out_dir, suffix=suffix)
    if not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        aside = path.with_name(path.name + ".unreadable")
        os.replace(path, aside)
        print(f"warning: {path} does not parse ({e}); moved to {aside}, starting a new file", file=sys.stderr)
        return {}
    return payload if isinstance(payload, dict) else {}


def write_json(name: str, payload: dict[str, Any], out_dir: Path | None = None, *, suffix: str = "") -> Path:
    """Write ``<out_dir>/<name>-<device-slug>-<YYYY-MM-DD><suffix>.json`` atomically and return its path.

    The text goes to a temporary file beside it, which then replaces the file in one rename, so a run
    killed while writing leaves the previous version whole.
    """
    path = results_path(name, payload["environment"], out_dir, suffix=suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _day_json_lock(path: Path):
    """Hold an exclusive ``flock`` for ``path`` (the lock file lives in the temporary folder, not beside the results)."""
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"attnkit-results-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_day_json(name: str, env: dict[str, Any], update: Callable[[dict[str, Any]], None],
                    out_dir: Path | None = None, *, suffix: str = "") -> Path:
    """Read this device and date's JSON, apply ``update`` to it in place, and write it back, under a file lock.

    The read happens inside the lock, just before the write, so calls running at the same time (two seeds,
    two parts of one script) each add what they finished without undoing what the other wrote since it
    started: ``update`` should set only the keys (or rows) its own call produced.
    """
    path = results_path(name, env, out_dir, suffix=suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _day_json_lock(path):
        payload = read_day_json(name, env, out_dir, suffix=suffix)
        payload["environment"] = env  # this call's: the same device and date, its own command and commit
        update(payload)
        return write_json(name, payload, out_dir, suffix=suffix)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def parse_parts(text: str, parts: tuple[str, ...]) -> list[str]:
    """A ``--parts`` value: a comma-separated subset of ``parts`` (``all``: every part), in the order given.

    Args:
        text: the option's value.
        parts: the benchmark's part names.

    Returns:
        The chosen names.

    Raises:
        argparse.ArgumentTypeError: an unknown name, or none.
    """
    names = list(parts) if text.strip() == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in parts]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown or text!r}; choose from {', '.join(parts)} or all")
    return names


# -- the command line, as a user runs it ------------------------------------------------------
def attnkit_command() -> list[str]:
    """The ``attnkit`` console script as a subprocess command line: this interpreter running the
    module ``pyproject.toml`` names as the script's entry point (so a checkout runs without
    installing, and the child sees the same packages as this process)."""
    import tomllib

    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["attnkit"]
    return [sys.executable, "-m", entry.split(":", 1)[0]]


def attnkit_env() -> dict[str, str]:
    """The environment of an ``attnkit`` subprocess: the checkout importable, output unbuffered."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
