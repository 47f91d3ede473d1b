"""The training study of issue 24 (scripts/gpu_study.py): its table of runs, the --only
filter, the results file and the plot; at --scale tiny on the CPU, runs in parallel,
skipped once finished, and a run cut short that resumes exactly."""

import importlib.util
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_study.py"


def load_study():
    spec = importlib.util.spec_from_file_location("gpu_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


study = load_study()


def parsed(settings: dict, tmp_path: Path):
    """The `backpack train` arguments and TrainConfig of a run's settings (checked as
    the command line checks them), without training anything."""
    from backpack.runs import check_args, config_from_args, train_parser

    if not hasattr(parsed, "parser"):
        parsed.parser = train_parser()  # made once: it reads the configs' sources
    argv = [*study.flags(settings), "--out-dir", str(tmp_path / "run")]
    args = parsed.parser.parse_args(argv)
    check_args(args)
    return args, config_from_args(args, args.n_positions or 128)


def test_every_run_of_the_table_is_a_valid_backpack_train_command(tmp_path):
    from backpack.model import BackpackConfig
    from backpack.runs import MODEL_SIZES

    study.check_variants(study.VARIANTS)
    assert {g for v in study.VARIANTS for g in v["groups"]} == set(study.GROUPS)
    for scale in study.SCALES.values():
        for variant in study.VARIANTS:
            settings = study.settings_for(variant, scale)
            args, config = parsed(settings, tmp_path)
            sizes = {k: getattr(args, k) for k in MODEL_SIZES
                     if getattr(args, k) is not None}
            BackpackConfig.preset(args.preset, **sizes)  # k divides the width, ...
            assert args.model == variant["model"]
            assert config.max_steps == (scale.short_steps if variant["steps"] == "short"
                                        else scale.steps * variant["steps"])
            assert config.checkpoint_interval > 0  # a cut run has something to resume
    with pytest.raises(ValueError, match="unknown keys"):
        study.check_variants([*study.VARIANTS, dict(
            name="typo", model="backpack", groups=["lr"], steps=1, learning_rat=1.0,
            what="")])


def test_the_base_runs_are_the_shipped_pairs_training(tmp_path):
    """At full scale, bp-base and tf-base repeat data/models/*-gutenberg's runs."""
    from backpack.runs import EXACT_FIELDS

    named = {v["name"]: v for v in study.VARIANTS}
    for name, folder in (("bp-base", "backpack"), ("tf-base", "transformer")):
        shipped = json.loads(
            (ROOT / "data" / "models" / f"{folder}-gutenberg" / "results.json")
            .read_text())
        args, config = parsed(study.settings_for(named[name], study.SCALES["full"]),
                              tmp_path)
        for key in (*EXACT_FIELDS, "eval_interval", "eval_batches"):
            assert getattr(config, key) == shipped["train"][key], (name, key)
        for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head",
                    "num_senses", "sense_dedup"):
            assert getattr(args, key) == shipped["config"][key], (name, key)
        assert args.model == shipped["model"] and args.sense_init is None


def test_the_paper_schedule_warms_up_on_5_percent_and_decays_to_zero(tmp_path):
    from backpack.train import learning_rate_at

    named = {v["name"]: v for v in study.VARIANTS}
    _, config = parsed(study.settings_for(named["bp-paper-schedule"],
                                          study.SCALES["full"]), tmp_path)
    assert config.warmup_steps == 300 and config.decay == "linear"
    assert learning_rate_at(299, config) == pytest.approx(1e-3)
    assert learning_rate_at(3150, config) == pytest.approx(0.5e-3, rel=1e-3)
    assert learning_rate_at(config.max_steps - 1, config) < 1e-6


def test_only_selects_runs_and_groups_and_refuses_unknown_names(capsys):
    names = [v["name"] for v in study.select(study.VARIANTS, ["schedule", "bp-k4"])]
    assert names == ["bp-base", "tf-base", "bp-paper-schedule", "tf-paper-schedule",
                     "bp-k4"]
    assert len(study.select(study.VARIANTS, None)) == len(study.VARIANTS)
    with pytest.raises(SystemExit) as stop:
        study.main(["--only", "bp-base", "bp-k3", "--plan"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "unknown run or group name(s): bp-k3" in err and "groups: baseline" in err


def test_the_plan_lists_every_run_with_its_estimate(capsys, tmp_path):
    assert study.main(["--plan", "--parallel", "8"]) == 0
    out = capsys.readouterr().out
    assert all(v["name"] in out for v in study.VARIANTS)
    assert f"{len(study.VARIANTS)} runs to go:" in out and "--parallel 8" in out
    study.append_line(tmp_path / "results.jsonl",
                      {"name": "bp-k4", "status": "finished"})
    assert study.main(["--plan", "--study", str(tmp_path), "--only", "senses"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert " done " in rows["bp-k4"] and " done " not in rows["bp-k8"]
    assert rows["2"].startswith("2 runs to go")  # bp-base and bp-k8


def test_result_lines_are_whole_and_the_last_one_of_a_run_counts(tmp_path):
    path = tmp_path / "results.jsonl"
    study.append_line(path, {"name": "a", "status": "failed"})
    study.append_line(path, {"name": "b", "status": "finished"})
    path.write_text(path.read_text() + '{"name": "a", "sta')  # a writer killed
    study.append_line(path, {"name": "a", "status": "finished"})
    lines = study.read_lines(path)
    assert {n: r["status"] for n, r in lines.items()} == {"a": "finished",
                                                          "b": "finished"}


def fake_line(name: str, model: str, groups: list[str], final: float) -> dict:
    steps = [250, 500, 750]
    return {"name": name, "status": "finished", "model": model, "groups": groups,
            "final_val_ppl": math.exp(final), "best_val_loss": final,
            "curve": {"step": steps, "tokens": [s * 16384 for s in steps],
                      "val_loss": [final + 1.0, final + 0.3, final]}}


def test_plot_only_draws_the_curves_from_results_jsonl_alone(tmp_path):
    path = tmp_path / "results.jsonl"
    study.append_line(path, fake_line("bp-base", "backpack", ["baseline", "init"], 4.0))
    study.append_line(path, fake_line("tf-base", "transformer", ["baseline"], 3.8))
    study.append_line(path, {"name": "bp-lr4e-3-short", "status": "failed",
                             "model": "backpack", "groups": ["lr"]})
    assert study.main(["--study", str(tmp_path), "--plot-only"]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"] == {"finished": 2, "failed": 1,
                                 "pending": len(study.VARIANTS) - 3}
    assert summary["runs"]["tf-base"]["final_val_ppl"] == pytest.approx(math.exp(3.8))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not study.plot_study(empty / "results.jsonl", empty / "curves.png")


def run_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--scale", "tiny", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def finite(*values) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) for v in values)


@pytest.mark.slow
def test_two_runs_at_once_then_a_second_invocation_skips_them(tmp_path):
    names = ["bp-authors-init", "tf-base"]
    first = run_script("--study", str(tmp_path), "--parallel", "2", "--only", *names)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = [json.loads(t) for t in (tmp_path / "results.jsonl").read_text()
             .splitlines()]
    assert sorted(r["name"] for r in lines) == sorted(names)
    for record in lines:
        assert record["status"] == "finished" and record["steps"] == 8
        assert record["tokens"] == 8 * 4 * 32 and record["wall_time_s"] > 0
        assert finite(record["final_val_loss"], record["final_val_ppl"],
                      record["best_val_loss"], record["best_val_ppl"])
        assert len(record["curve"]["val_loss"]) == 2  # steps 4 and 8
        assert finite(*record["curve"]["val_loss"], *record["train_curve"]["loss"])
    results = json.loads((tmp_path / "runs" / "bp-authors-init" / "results.json")
                         .read_text())
    assert results["sense_init"] == "authors"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"] == {"finished": 2}
    assert finite(*(summary["runs"][n]["final_val_ppl"] for n in names))
    assert (tmp_path / "curves.png").stat().st_size > 0

    folders = {n: (tmp_path / "runs" / n / "results.json").stat().st_mtime_ns
               for n in names}
    second = run_script("--study", str(tmp_path), "--parallel", "2", "--only", *names)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "skipped: " in second.stdout and "starts" not in second.stdout
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    assert folders == {n: (tmp_path / "runs" / n / "results.json").stat().st_mtime_ns
                       for n in names}  # a finished run's folder is never rewritten


def run_state(study_dir: Path, name: str) -> dict:
    return json.loads((study_dir / "summary.json").read_text())["runs"][name]


@pytest.mark.slow
def test_a_run_cut_short_resumes_exactly(tmp_path):
    cut, straight = tmp_path / "cut", tmp_path / "straight"
    only = ["--only", "bp-4x"]  # 32 steps at tiny scale, a checkpoint every 4

    # cut by its time limit, before its first checkpoint: nothing recorded
    limited = run_script("--study", str(cut), *only, "--time-limit-s", "1")
    assert limited.returncode == study.EXIT_CUT, limited.stdout + limited.stderr
    assert run_state(cut, "bp-4x")["status"] == "cut"
    assert not (cut / "results.jsonl").exists()

    # killed mid-way (SIGTERM to the study, once a checkpoint is written)
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--scale", "tiny", "--study", str(cut), *only],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoints = cut / "runs" / "bp-4x" / "checkpoints"
    deadline = time.monotonic() + 120
    while not list(checkpoints.glob("step-*/trainer_state.pt")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == study.EXIT_CUT, output
    state = run_state(cut, "bp-4x")
    assert state["status"] == "cut" and 4 <= state["reached_step"] < 32, state

    resumed = run_script("--study", str(cut), *only)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumes at step {state['reached_step']}" in resumed.stdout
    log = (cut / "runs" / "bp-4x" / "train.log").read_text()
    assert f"at step {state['reached_step']}" in log and "resumed from" in log
    line = json.loads((cut / "results.jsonl").read_text())
    assert line["steps"] == 32 and line["starts"] == 3
    assert line["curve"]["step"] == list(range(4, 33, 4))

    whole = run_script("--study", str(straight), *only)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    reference = json.loads((straight / "results.jsonl").read_text())
    assert reference["curve"] == line["curve"]  # the cut run is the same run
    assert reference["final_val_loss"] == line["final_val_loss"]
