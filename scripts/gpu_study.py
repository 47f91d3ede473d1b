"""The training study of issue 24 (part 1): what closes the gap between the Backpack and
the Transformer at the scale of chapter 7's models (d=256, 4 layers, k=16, 98M tokens of
the Gutenberg split; validation perplexity 52.5 vs 42.8).

    python scripts/gpu_study.py --plan             # the runs, with time estimates
    python scripts/gpu_study.py --scale tiny --study /tmp/study --parallel 2  # a CPU
    python scripts/gpu_study.py --scale full --study "$OUT/study" \\
        --runs-dir /tmp/study-runs --parallel 4 --time-limit-s 520 --deadline-s 520
    python scripts/gpu_study.py --study data/study --plot-only  # summary and plot

Each run is a named variant of the shipped pair's training (VARIANTS below: the same
data, tokens per step and context), trained by the package's own command, `python -m
backpack train` (backpack.runs, chapter 7b), in its own process and out-dir
(RUNS_DIR/NAME), several at once (--parallel: on an H200, 4 at once trained 1.74x the
tokens per second of one alone).
As each run ends, the study appends one JSON line to STUDY/results.jsonl (its settings,
final and best validation loss and perplexity, tokens, wall time and curves) and
rewrites STUDY/summary.json and STUDY/curves.png, each atomically, so that a session cut
short keeps every run that finished.

A run past --time-limit-s (its own wall time in this invocation) or past --deadline-s
(the whole invocation's) is stopped; it keeps its last checkpoint (one every
checkpoint_interval steps). Run the same command again: finished runs are skipped (a
line in results.jsonl, or results.json in the run's folder, which is never written
over), cut runs resume exactly (`backpack train --resume`) and the others start.

Exit status: 0 every selected run finished; 1 one failed (its line says why); 2 a bad
command line; 75 some were cut, not started or busy (run the command again to go on).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the package of this checkout, installed or not

EXIT_CUT = 75  # EX_TEMPFAIL: some runs were cut or not started; run again to go on
GRACE_S = 15.0  # a stopped run gets this long to exit after SIGTERM, then SIGKILL
POLL_S = 0.2  # how often the study looks at its running trainings
SHIPPED_PPL = {"backpack": 52.5, "transformer": 42.8}  # data/models/*-gutenberg


# The scales. `full` is the shipped pair's training (data/models/*-gutenberg/
# results.json and scripts/gpu_session.sh): d=256, 4 layers, 4 heads, k=16, a 16k
# vocabulary, context 256, batches of 64 x 256 tokens, AdamW lr 1e-3, 200 warmup steps,
# cosine decay to a tenth, 6,000 steps (98M tokens, 5.6 epochs of the training split).
# `tiny` is the same table on the tiny preset, for a smoke test on a CPU in seconds.
@dataclass(frozen=True)
class Scale:
    """The settings that every run of the study shares, at one size."""

    name: str
    model: dict  # `backpack train` model flags (underscored names) and their values
    train: dict  # `backpack train` training flags (TrainConfig fields)
    steps: int  # max_steps of a run of length 1 (the shipped pair's)
    short_steps: int  # max_steps of a short run (the learning-rate sweep)
    val_tokens: int | None = None  # validate on the first this many tokens (None: all)
    needs_gpu: bool = False


SCALES = {
    "full": Scale(
        "full",
        model=dict(preset="tiny", vocab_size=16384, n_positions=256, n_embd=256,
                   n_layer=4, n_head=4, num_senses=16,
                   sense_dedup=False),  # on a GPU torch.unique costs more than it saves
        train=dict(block_size=256, batch_size=64, learning_rate=1e-3, warmup_steps=200,
                   decay="cosine", min_lr_ratio=0.1, weight_decay=0.1,
                   eval_interval=250, eval_batches=40, log_interval=50, seed=0,
                   checkpoint_interval=500, keep_checkpoints=1),
        steps=6000, short_steps=1500, needs_gpu=True),
    "tiny": Scale(
        "tiny",
        model=dict(preset="tiny", num_senses=16),
        train=dict(block_size=32, batch_size=4, learning_rate=1e-3, warmup_steps=2,
                   decay="cosine", min_lr_ratio=0.1, weight_decay=0.1,
                   eval_interval=4, eval_batches=2, log_interval=2, seed=0,
                   checkpoint_interval=4, keep_checkpoints=1),
        steps=8, short_steps=4, val_tokens=4096),
}

# The study: one dict per run. `groups` are the panels of the plot (a baseline sits in
# every group it is the reference of); `steps` is "short" or a multiple of the scale's
# steps; every other key overrides the scale's `backpack train` flag of that name, plus
# `warmup_fraction` (warmup_steps as a fraction of the run's steps). The order is the
# order of starting: the cheap runs that the others are read against first, the long
# ones last, so that a study cut short has finished as many runs as it could.
VARIANTS: list[dict] = [
    # learning rate per model: short runs (a quarter of the steps, their own schedule)
    *[dict(name=f"{short}-lr{lr}-short", model=model, groups=["lr"], steps="short",
           learning_rate=float(lr),
           what=f"{model.capitalize()}, lr {lr}, a quarter of the steps")
      for model, short in (("backpack", "bp"), ("transformer", "tf"))
      for lr in ("5e-4", "1e-3", "2e-3", "4e-3")],
    # the shipped pair, again: the reference of every group but the sweep
    dict(name="bp-base", model="backpack", steps=1,
         groups=["baseline", "schedule", "init", "length", "senses", "seeds"],
         what="Backpack as shipped (lr 1e-3, cosine to 1e-4, k=16)"),
    dict(name="tf-base", model="transformer", steps=1,
         groups=["baseline", "schedule", "length"],
         what="Transformer as shipped"),
    # the paper's schedule: linear warmup (5% of the steps) then linear decay to zero
    dict(name="bp-paper-schedule", model="backpack", groups=["schedule"], steps=1,
         decay="linear", min_lr_ratio=0.0, warmup_fraction=0.05,
         what="Backpack, 5% linear warmup then linear decay to zero (the paper's)"),
    dict(name="tf-paper-schedule", model="transformer", groups=["schedule"], steps=1,
         decay="linear", min_lr_ratio=0.0, warmup_fraction=0.05,
         what="Transformer, the paper's schedule"),
    # the authors' initialisation of the sense network's output layers (chapter 7b)
    dict(name="bp-authors-init", model="backpack", groups=["init"], steps=1,
         sense_init="authors",
         what="Backpack, sense MLP outputs from N(0, 0.02/sqrt(2L)) as the authors"),
    # senses k = 4, 8 (k = 16 is bp-base); the paper's Table 8 saw loss fall with k
    dict(name="bp-k8", model="backpack", groups=["senses"], steps=1, num_senses=8,
         what="Backpack, k = 8 senses"),
    dict(name="bp-k4", model="backpack", groups=["senses"], steps=1, num_senses=4,
         what="Backpack, k = 4 senses"),
    # run-to-run noise: the Backpack's curves spike (bp-lr4e-3-short, bp-authors-init
    # and bp-paper-schedule on the H200), so one seed may not tell two settings apart
    dict(name="bp-seed1", model="backpack", groups=["seeds"], steps=1, seed=1,
         what="Backpack as shipped, another seed (model, dropout and batches)"),
    # training length at fixed data (the paper: Backpacks "take longer to converge")
    dict(name="bp-2x", model="backpack", groups=["length"], steps=2,
         what="Backpack, 2x the steps (11 epochs of the training split)"),
    dict(name="tf-2x", model="transformer", groups=["length"], steps=2,
         what="Transformer, 2x the steps"),
    dict(name="bp-4x", model="backpack", groups=["length"], steps=4,
         what="Backpack, 4x the steps (22 epochs)"),
    dict(name="tf-4x", model="transformer", groups=["length"], steps=4,
         what="Transformer, 4x the steps"),
]

GROUPS = {  # the plot's panels, in order, and what each asks
    "baseline": "the shipped pair, retrained",
    "lr": "learning rate, short runs",
    "schedule": "cosine to 10% vs the paper's linear to zero",
    "init": "sense network output layers: chapter 5's vs the authors'",
    "length": "2x and 4x the steps at fixed data",
    "senses": "senses k = 4, 8, 16",
    "seeds": "the same Backpack, two seeds",
}
VARIANT_KEYS = {"name", "model", "groups", "steps", "what"}  # besides flags
OVERRIDES = {"learning_rate", "decay", "min_lr_ratio", "warmup_steps",
             "warmup_fraction", "num_senses", "sense_init", "seed"}


def check_variants(variants: list[dict]) -> None:
    """Raise ValueError naming the first malformed entry of a variant table."""
    names = [v.get("name") for v in variants]
    for variant in variants:
        name = variant.get("name")
        unknown = set(variant) - VARIANT_KEYS - OVERRIDES
        if unknown:
            raise ValueError(f"{name}: unknown keys {sorted(unknown)}")
        if names.count(name) != 1 or name in GROUPS:
            raise ValueError(f"{name}: names must be unique and not a group's name")
        if variant.get("model") not in ("backpack", "transformer"):
            raise ValueError(f"{name}: model must be backpack or transformer")
        if not variant.get("groups") or set(variant["groups"]) - set(GROUPS):
            raise ValueError(f"{name}: groups must be some of {sorted(GROUPS)}")
        steps = variant.get("steps")
        if steps != "short" and not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"{name}: steps must be 'short' or a whole multiple >= 1")
        if "sense_init" in variant and variant["model"] != "backpack":
            raise ValueError(f"{name}: only a Backpack has a sense network to init")
    empty = [g for g in GROUPS if not any(g in v["groups"] for v in variants)]
    if empty:
        raise ValueError(f"groups without a run: {empty}")


class UnknownNames(ValueError):
    """--only named something that is neither a run nor a group."""


def select(variants: list[dict], only: list[str] | None) -> list[dict]:
    """The variants named by --only (run names or group names), in table order."""
    if not only:
        return list(variants)
    names = {v["name"] for v in variants}
    unknown = [n for n in only if n not in names and n not in GROUPS]
    if unknown:
        raise UnknownNames(
            f"--only: unknown run or group name(s): {', '.join(unknown)}; runs: "
            f"{', '.join(v['name'] for v in variants)}; groups: {', '.join(GROUPS)}")
    wanted = set(only)
    return [v for v in variants if v["name"] in wanted or wanted & set(v["groups"])]


def settings_for(variant: dict, scale: Scale) -> dict:
    """Every `backpack train` flag of a run, by underscored name, and its value."""
    steps = (scale.short_steps if variant["steps"] == "short"
             else scale.steps * variant["steps"])
    settings = {"model": variant["model"], **scale.model, **scale.train,
                "max_steps": steps}
    for key in OVERRIDES & set(variant):
        settings[key] = variant[key]
    fraction = settings.pop("warmup_fraction", None)
    if fraction is not None:
        settings["warmup_steps"] = max(1, round(fraction * steps))
    return settings


def flags(settings: dict) -> list[str]:
    """`backpack train` arguments of a settings dict (booleans as --x / --no-x)."""
    argv = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv


@dataclass
class Data:
    """The token files every run reads (encoded once, before the runs start)."""

    train_bin: Path
    val_bin: Path


def train_argv(settings: dict, out_dir: Path, data: Data) -> list[str]:
    """The command line of one run: `python -m backpack train ...` into out_dir."""
    return [sys.executable, "-m", "backpack", "train", *flags(settings),
            "--train-bin", str(data.train_bin), "--val-bin", str(data.val_bin),
            "--out-dir", str(out_dir), "--no-progress"]


def prepare_data(scale: Scale, runs_dir: Path) -> Data:
    """Chapter 1's splits, encoded with the book's tokenizer into the cache once (not
    by N runs at once); at a scale with val_tokens, the validation split's start."""
    from backpack.data import encode_corpus, read_token_file

    train_bin, val_bin = encode_corpus("train"), encode_corpus("validation")
    if scale.val_tokens is not None:
        head = runs_dir / "_data" / f"validation-first-{scale.val_tokens}.bin"
        if not head.exists():
            from backpack.checkpoint import atomic_write

            tokens = read_token_file(val_bin)[: scale.val_tokens]
            atomic_write(head, lambda tmp: tokens.tofile(tmp))
        val_bin = head
    return Data(train_bin, val_bin)


# What a run costs on the H200, measured by this study (data/study/results.jsonl, its
# first calls): tokens per second of each model alone (the short runs at lr 1e-3,
# checkpoints included), and the seconds of a run outside its steps (the process, CUDA,
# the final fp16 save, validation slice and plot). Runs at once share the GPU: 4 at once
# made 1.74x, and 6 at once 1.80x, the tokens per second of one run alone.
SOLO_TOKENS_PER_S = {"backpack": 732_498, "transformer": 1_143_270}
RUN_OVERHEAD_S = 14.0
SHARED_SPEEDUP = 1.8
CALL_S = 520  # the study's share of one device call (600 s, less the session's start)


def estimate_s(settings: dict) -> float:
    """Seconds one run takes alone on the H200 (k < 16 counted as k = 16: a bound)."""
    tokens = settings["max_steps"] * settings["batch_size"] * settings["block_size"]
    return tokens / SOLO_TOKENS_PER_S[settings["model"]] + RUN_OVERHEAD_S


def plan_lines(variants: list[dict], scale: Scale, parallel: int,
               done: set[str] = frozenset()) -> list[str]:
    """The plan as text: each run's steps, tokens and time alone on the H200 (runs in
    `done` marked so), and the wall time of those left with --parallel."""
    lines = [f"{'run':22s} {'steps':>6s} {'tokens':>7s} {'alone':>6s}  what"]
    left, longest = 0.0, 0.0
    for variant in variants:
        settings = settings_for(variant, scale)
        tokens = settings["max_steps"] * settings["batch_size"] * settings["block_size"]
        seconds = estimate_s(settings)
        mark = "done" if variant["name"] in done else f"{seconds:5.0f}s"
        if variant["name"] not in done:
            left, longest = left + seconds, max(longest, seconds)
        lines.append(f"{variant['name']:22s} {settings['max_steps']:6d} "
                     f"{tokens / 1e6:6.0f}M {mark:>6s}  {variant['what']}")
    wall = max(longest, left / min(parallel, SHARED_SPEEDUP))
    todo = len(variants) - len(done & {v["name"] for v in variants})
    lines.append(
        f"{todo} runs to go: {left / 60:.0f} min one after another on an H200 "
        f"({SOLO_TOKENS_PER_S['backpack']:,} and {SOLO_TOKENS_PER_S['transformer']:,} "
        f"tokens/s alone); with --parallel {parallel}, about {wall / 60:.0f} min (runs "
        f"at once share the GPU: {SHARED_SPEEDUP}x one run's throughput at most, "
        f"measured), {math.ceil(wall / CALL_S)} calls of {CALL_S} s; a run over "
        f"{CALL_S} s alone needs a second call to finish (it resumes)")
    return lines


# The state of a run, from its folder and results.jsonl.
def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_lines(path: Path) -> dict[str, dict]:
    """The last line of each run in results.jsonl (a half-written line is skipped)."""
    last = {}
    if path.exists():
        for text in path.read_text().splitlines():
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "name" in record:
                last[record["name"]] = record
    return last


def append_line(path: Path, record: dict) -> None:
    """Append one JSON line to path atomically: the old lines and the new one are
    written to a temporary file that then replaces path, so a reader (or a kill)
    never sees half a line."""
    from backpack.checkpoint import atomic_write

    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    text = old + json.dumps(record) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the run's newest complete checkpoint (None: none)."""
    from backpack.runs import latest_checkpoint

    folder = latest_checkpoint(run_dir)
    return None if folder is None else int(folder.name.split("-")[1])


def in_use(run_dir: Path) -> bool:
    """Whether a process holds the run folder's lock (`backpack train` takes it): an
    earlier study's training that still runs, say."""
    import fcntl

    if not (run_dir / ".lock").exists():
        return False
    with open(run_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def read_segments(run_dir: Path) -> dict:
    """run_dir/study.json: the run's settings and each start of it by the study."""
    path = run_dir / "study.json"
    return json.loads(path.read_text()) if path.exists() else {}


def metrics_curves(run_dir: Path) -> tuple[dict, dict]:
    """The validation and training curves of a run's metrics.jsonl, as columns."""
    from backpack.train import read_metrics

    entries = read_metrics(run_dir / "metrics.jsonl")
    val = [m for m in entries if "val_loss" in m]
    return ({"step": [m["step"] for m in val], "tokens": [m["tokens"] for m in val],
             "val_loss": [m["val_loss"] for m in val]},
            {"step": [m["step"] for m in entries],
             "tokens": [m["tokens"] for m in entries],
             "loss": [m["loss"] for m in entries], "lr": [m["lr"] for m in entries]})


def finished_record(variant: dict, settings: dict, run_dir: Path) -> dict:
    """The results.jsonl line of a finished run (its results.json and metrics)."""
    from backpack.train import perplexity

    results = json.loads((run_dir / "results.json").read_text())
    curve, train_curve = metrics_curves(run_dir)
    losses = curve["val_loss"]
    best = min(range(len(losses)), key=losses.__getitem__) if losses else None
    segments = read_segments(run_dir).get("segments", [])
    return {
        "name": variant["name"], "status": "finished", "model": variant["model"],
        "groups": variant["groups"], "what": variant["what"], "settings": settings,
        "steps": results["steps"], "tokens": results["tokens_seen"],
        "parameters": results["parameters"],
        # the final loss on the fixed validation slice (the shipped pair's 52.5, 42.8)
        "final_val_loss": results["val_slice_loss"],
        "final_val_ppl": results["val_slice_ppl"],
        "val_slice_tokens": results["val_slice_tokens"],
        # the curve: the loss on eval_batches validation batches (the same ones each
        # time); best is its lowest point, over-fitting shows as a rise after it
        "best_val_loss": None if best is None else losses[best],
        "best_val_ppl": None if best is None else perplexity(losses[best]),
        "best_val_step": None if best is None else curve["step"][best],
        "last_curve_val_loss": losses[-1] if losses else None,
        "wall_time_s": round(sum(s["seconds"] for s in segments), 2),
        "starts": len(segments), "device": results["device"],
        "tokens_per_s_last_start": results["tokens_per_s"],
        "finished_at": now(), "curve": curve, "train_curve": train_curve,
    }


def failed_record(variant: dict, settings: dict, run_dir: Path, code: int) -> dict:
    """The results.jsonl line of a run whose command failed (a divergence, say)."""
    log = run_dir / "train.log"
    tail = log.read_text(errors="replace").splitlines()[-8:] if log.exists() else []
    return {"name": variant["name"], "status": "failed", "model": variant["model"],
            "groups": variant["groups"], "what": variant["what"],
            "settings": settings, "returncode": code, "log_tail": tail,
            "reached_step": checkpoint_step(run_dir), "finished_at": now()}


@dataclass
class Running:
    """A training the study started and watches."""

    variant: dict
    settings: dict
    run_dir: Path
    process: subprocess.Popen
    log: object  # the open train.log
    started: float
    stop_at: float  # time.monotonic() past which it is stopped
    stopped: str | None = None  # why the study stopped it, if it did
    term_sent: float | None = None


@dataclass
class Study:
    """One invocation: what it runs, where, and what it has seen."""

    scale: Scale
    study_dir: Path
    runs_dir: Path
    parallel: int
    time_limit_s: float | None
    deadline_s: float | None
    retry_failed: bool
    selected: list[dict]
    data: Data | None = None
    state: dict = field(default_factory=dict)  # name -> {"status": ..., ...}
    t0: float = field(default_factory=time.monotonic)
    interrupted: str | None = None

    @property
    def results_path(self) -> Path:
        return self.study_dir / "results.jsonl"

    def run_dir(self, name: str) -> Path:
        return self.runs_dir / name


def same_settings(recorded: dict | None, settings: dict) -> bool:
    """Whether a run's recorded settings are today's (JSON turns tuples into lists)."""
    return recorded is None or json.loads(json.dumps(settings)) == recorded


def classify(study: Study, lines: dict[str, dict]) -> list[dict]:
    """Set study.state for every selected run; return those to start, in order.
    A run is finished (a line, or results.json in its folder: the line is written
    then), failed (a failed line; started again with --retry-failed), in conflict
    (its folder holds other settings), busy (its folder is locked), or to start:
    resumed from its checkpoint, or from the beginning."""
    todo = []
    for variant in study.selected:
        name, run_dir = variant["name"], study.run_dir(variant["name"])
        settings = settings_for(variant, study.scale)
        line = lines.get(name)
        recorded = read_segments(run_dir).get("settings")
        if line and not same_settings(line.get("settings"), settings):
            print(f"{name}: results.jsonl holds it with other settings; it runs again")
            line = None
        if not same_settings(recorded, settings):
            study.state[name] = {"status": "conflict", "why": (
                f"{run_dir} holds this run with other settings: move it away, or "
                f"choose another --runs-dir")}
            continue
        if (line is None or line["status"] != "finished") and (
                run_dir / "results.json").exists():
            line = finished_record(variant, settings, run_dir)
            append_line(study.results_path, line)  # finished when the study was cut
        if line and line["status"] == "finished":
            study.state[name] = {"status": "finished"}
        elif line and line["status"] == "failed" and not study.retry_failed:
            study.state[name] = {"status": "failed",
                                 "returncode": line.get("returncode")}
        elif in_use(run_dir):
            study.state[name] = {"status": "busy", "why": (
                f"another process is training into {run_dir}: wait for it or stop it")}
        else:
            step = checkpoint_step(run_dir)
            study.state[name] = {"status": "pending", "reached_step": step}
            todo.append(variant)
    return todo


def start(study: Study, variant: dict) -> Running:
    """Start one `backpack train` process: resumed from its checkpoint if it has one,
    the folder's leftovers replaced if not (a run cut before its first checkpoint)."""
    from backpack.checkpoint import write_json
    from backpack.runs import RUN_FILES

    name, run_dir = variant["name"], study.run_dir(variant["name"])
    settings = settings_for(variant, study.scale)
    argv = train_argv(settings, run_dir, study.data)
    step = checkpoint_step(run_dir)
    if step is not None:
        argv.append("--resume")
    elif any((run_dir / f).exists() for f in RUN_FILES):
        argv.append("--overwrite")  # nothing to keep: no checkpoint, no results
    run_dir.mkdir(parents=True, exist_ok=True)
    record = read_segments(run_dir) or {"name": name, "settings": settings}
    write_json(run_dir / "study.json", record, indent=1)
    log = open(run_dir / "train.log", "a")
    what = f"resume from step {step}" if step else "start"
    log.write(f"== gpu_study {now()}: {what} ({' '.join(argv[1:])})\n")
    log.flush()
    threads = max(1, (os.cpu_count() or 1) // study.parallel)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads)),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    started = time.monotonic()
    limits = [math.inf]
    if study.time_limit_s is not None:
        limits.append(started + study.time_limit_s)
    if study.deadline_s is not None:
        limits.append(study.t0 + study.deadline_s)
    print(f"{name}: {'resumes at step ' + str(step) if step else 'starts'} "
          f"(pid {process.pid})", flush=True)
    study.state[name] = {"status": "running", "reached_step": step}
    return Running(variant, settings, run_dir, process, log, started, min(limits))


def record_segment(run: Running, outcome: str) -> float:
    """Add this start of the run (its seconds and outcome) to its study.json."""
    from backpack.checkpoint import write_json

    seconds = time.monotonic() - run.started
    record = read_segments(run.run_dir)
    record.setdefault("segments", []).append(
        {"ended": now(), "seconds": round(seconds, 2), "outcome": outcome,
         "returncode": run.process.returncode, "stopped": run.stopped})
    write_json(run.run_dir / "study.json", record, indent=1)
    return seconds


def finish(study: Study, run: Running) -> None:
    """A run's process has exited: record it as finished, cut or failed."""
    run.log.close()
    name, code = run.variant["name"], run.process.returncode
    if (run.run_dir / "results.json").exists():  # exit 3 (failed to learn) too
        seconds = record_segment(run, "finished")
        record = finished_record(run.variant, run.settings, run.run_dir)
        append_line(study.results_path, record)
        study.state[name] = {"status": "finished"}
        print(f"{name}: finished in {seconds:.0f} s, validation perplexity "
              f"{record['final_val_ppl']:.2f} (best on the curve "
              f"{record['best_val_ppl']:.2f} at step {record['best_val_step']})",
              flush=True)
    elif run.stopped:
        record_segment(run, "cut")
        step = checkpoint_step(run.run_dir)
        study.state[name] = {"status": "cut", "reached_step": step, "why": run.stopped}
        kept = (f"its checkpoint at step {step}: the next invocation resumes it"
                if step else "no checkpoint yet: the next invocation starts it again")
        print(f"{name}: stopped by {run.stopped}, {kept}", flush=True)
    else:
        record_segment(run, "failed")
        append_line(study.results_path,
                    failed_record(run.variant, run.settings, run.run_dir, code))
        study.state[name] = {"status": "failed", "returncode": code}
        print(f"{name}: FAILED with exit status {code}; see {run.run_dir}/train.log",
              flush=True)
    write_summary(study)
    if (run.run_dir / "results.json").exists():
        plot_study(study.results_path, study.study_dir / "curves.png")


def stop(run: Running, why: str) -> None:
    """SIGTERM now (the checkpoints on disk are whole); SIGKILL after GRACE_S."""
    if run.term_sent is None:
        run.stopped, run.term_sent = why, time.monotonic()
        run.process.terminate()
    elif time.monotonic() - run.term_sent > GRACE_S:
        run.process.kill()


def write_summary(study: Study) -> None:
    """STUDY/summary.json, rewritten atomically: every selected run's state and, for
    the finished ones, the numbers that matter, by group."""
    from backpack.checkpoint import write_json

    lines = read_lines(study.results_path)
    runs = {}
    for variant in study.selected:
        name = variant["name"]
        entry = {"model": variant["model"], "groups": variant["groups"],
                 "what": variant["what"], **study.state.get(name, {})}
        line = lines.get(name)
        if line and line["status"] == "finished":
            entry.update({k: line.get(k) for k in (
                "steps", "tokens", "final_val_loss", "final_val_ppl", "best_val_loss",
                "best_val_ppl", "best_val_step", "wall_time_s", "device")})
        runs[name] = entry
    counts = {}
    for entry in runs.values():
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    groups = {g: [n for n, e in runs.items() if g in e["groups"]] for g in GROUPS}
    write_json(study.study_dir / "summary.json", {
        "scale": study.scale.name, "updated": now(), "parallel": study.parallel,
        "runs_dir": str(study.runs_dir), "counts": counts,
        "shipped_val_ppl": SHIPPED_PPL, "groups": groups, "runs": runs}, indent=1)


def plot_study(results_path: Path, out: Path) -> bool:
    """The validation curves of every finished run of results.jsonl, one panel per
    group, written atomically to out (a PNG); False if there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from backpack.checkpoint import atomic_write

    table = {v["name"]: v["groups"] for v in VARIANTS}  # today's groups of a name
    done = [{**r, "groups": table.get(r["name"], r["groups"])}
            for r in read_lines(results_path).values() if r["status"] == "finished"]
    groups = [g for g in GROUPS if any(g in r["groups"] for r in done)]
    if not groups:
        return False
    columns = min(3, len(groups))
    rows = math.ceil(len(groups) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows),
                             squeeze=False)
    for ax, group in zip(axes.flat, groups, strict=False):
        members = [r for r in done if group in r["groups"]]
        for record in members:
            curve = record["curve"]
            style = "-" if record["model"] == "backpack" else "--"
            ax.plot([t / 1e6 for t in curve["tokens"]], curve["val_loss"], style,
                    marker=".", label=f"{record['name']}: "
                    f"{record['final_val_ppl']:.1f}")
        losses = [x for r in members for x in r["curve"]["val_loss"]]
        low = min(losses)  # the top: the first points, or 1.5 nats above the lowest
        high = min(max(r["curve"]["val_loss"][0] for r in members), low + 1.5)
        pad = 0.05 * max(high - low, 1e-3)
        ax.set_ylim(low - pad, high + pad)
        ax.set_title(f"{group}: {GROUPS[group]}", fontsize=9)
        ax.set_xlabel("tokens seen (millions)")
        ax.set_ylabel("validation loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="run: final perplexity", title_fontsize=7)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    fig.tight_layout()
    atomic_write(out, lambda tmp: save_small_png(fig, tmp))
    plt.close(fig)
    return True


def save_small_png(fig, path: Path) -> None:
    """The figure as a 256-colour PNG (a third of the bytes of matplotlib's RGBA; the
    repository keeps the study's plot)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    image = Image.open(buffer).convert("RGB").quantize(256)
    image.save(path, format="png", optimize=True)


def on_signal(study: Study):
    """A SIGTERM or SIGINT handler: stop every run (they keep their checkpoints)."""
    def handler(signum, _frame):
        study.interrupted = signal.Signals(signum).name
    return handler


def run_study(study: Study) -> int:
    """Start, watch and record the selected runs; the exit status."""
    study.study_dir.mkdir(parents=True, exist_ok=True)
    study.runs_dir.mkdir(parents=True, exist_ok=True)
    todo = classify(study, read_lines(study.results_path))
    skipped = [n for n, s in study.state.items() if s["status"] != "pending"]
    if skipped:
        states = ", ".join(f"{n} ({study.state[n]['status']})" for n in skipped)
        print(f"skipped: {states}")
    if todo:
        study.data = prepare_data(study.scale, study.runs_dir)
    write_summary(study)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal(study))
    running: list[Running] = []
    while todo or running:
        late = (study.deadline_s is not None
                and time.monotonic() > study.t0 + study.deadline_s)
        free = study.parallel - len(running)
        for variant in todo[:free] if not (late or study.interrupted) else []:
            todo.remove(variant)
            running.append(start(study, variant))
        if (late or study.interrupted) and not running:
            break
        time.sleep(POLL_S)
        for run in list(running):
            if study.interrupted:
                stop(run, f"a {study.interrupted} to the study")
            elif time.monotonic() > run.stop_at:
                stop(run, "its time limit" if study.time_limit_s is not None and
                     time.monotonic() > run.started + study.time_limit_s
                     else "the study's deadline")
            if run.process.poll() is not None:
                running.remove(run)
                finish(study, run)
    write_summary(study)
    plot_study(study.results_path, study.study_dir / "curves.png")
    statuses = [s["status"] for s in study.state.values()]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in (
        "finished", "cut", "pending", "busy", "failed", "conflict"))
    print(f"study: {counts} (pending: not started); results in {study.results_path}")
    if "failed" in statuses or "conflict" in statuses:
        return 1
    return 0 if all(s == "finished" for s in statuses) else EXIT_CUT


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpu_study.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="full",
                   help="full: the shipped pair's size (a GPU); tiny: the tiny preset "
                   "and a few steps, for a CPU (default: full)")
    p.add_argument("--study", type=Path, default=None, metavar="DIR",
                   help="the study folder: results.jsonl, summary.json, curves.png "
                   "(required, except with --plan)")
    p.add_argument("--runs-dir", type=Path, default=None, metavar="DIR",
                   help="where each run's out-dir goes, DIR/NAME (default: STUDY/runs)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="run only these runs or groups (default: all)")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="trainings at once, each its own process (default: 1)")
    p.add_argument("--time-limit-s", type=float, default=None, metavar="S",
                   help="stop a run after S seconds of this invocation; it resumes "
                   "from its checkpoint next time (default: no limit)")
    p.add_argument("--deadline-s", type=float, default=None, metavar="S",
                   help="start no run after S seconds, and stop those still running "
                   "(default: no deadline)")
    p.add_argument("--retry-failed", action="store_true",
                   help="start the runs whose line in results.jsonl says failed")
    p.add_argument("--plan", action="store_true",
                   help="print the runs with their estimated GPU time and exit")
    p.add_argument("--plot-only", action="store_true",
                   help="draw STUDY/curves.png and rewrite STUDY/summary.json from "
                   "STUDY/results.jsonl (for --scale and --only), train nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    check_variants(VARIANTS)
    p = parser()
    args = p.parse_args(argv)
    try:
        selected = select(VARIANTS, args.only)
    except UnknownNames as err:
        p.error(str(err))  # exit status 2
    if args.parallel < 1:
        p.error("--parallel must be at least 1")
    scale = SCALES[args.scale]
    if args.plan:
        lines = read_lines(args.study / "results.jsonl") if args.study else {}
        done = {name for name, line in lines.items() if line["status"] == "finished"}
        print("\n".join(plan_lines(selected, scale, args.parallel, done)))
        return 0
    if args.study is None:
        p.error("--study DIR is required (except with --plan)")
    study = Study(scale, args.study, args.runs_dir or args.study / "runs",
                  args.parallel, args.time_limit_s, args.deadline_s, args.retry_failed,
                  selected)
    if args.plot_only:  # what results.jsonl says, nothing trained
        classify(study, read_lines(study.results_path))
        write_summary(study)
        drawn = plot_study(study.results_path, args.study / "curves.png")
        print(f"wrote {args.study / 'summary.json'} and {args.study / 'curves.png'}"
              if drawn else f"no finished run in {study.results_path}: nothing drawn")
        return 0
    import torch

    if scale.needs_gpu and not torch.cuda.is_available():
        p.error(f"--scale {scale.name} needs a CUDA GPU (hours per run on a CPU); "
                f"use --scale tiny on a CPU")
    return run_study(study)


if __name__ == "__main__":
    sys.exit(main())
