"""The README's commands and code run as written (in a smoke form).

Every fenced block of README.md is read. Python blocks are executed. Each shell
command is either run (through the `backpack` console command, training with
`--max-steps 2` and a temporary `--out-dir`; the section "Your own text" in order, on
small files of the corpus) or skipped for a stated reason; a command that no rule
covers fails the test, so a new README command has to be run or explicitly excused
here.
"""

import glob
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

SKIPPED = {  # command prefix -> why the smoke test does not run it
    "python3 -m venv": "the two set-up commands: CI itself runs them on a clean clone",
    ".venv/bin/jupyter lab": "starts an interactive server",
    "torchrun": "a launch on 8 GPUs; 2-process DDP on CPU is tested in test_train",
    "grep -v -e '^torch==' -e '^triton==' requirements.txt":
        "a pip install, for GPU machines",
    "pip install": "installs packages",
    "backpack bench --device cuda":
        "a GPU benchmark of minutes; tests/test_bench.py runs its quick form",
    "backpack data":
        "writes to the user's data folder; tests/test_install.py runs "
        "`data install` and `data where` (a fresh venv, a temporary HOME)",
}


def blocks(language: str) -> list[str]:
    """The bodies of the README's fenced blocks in language."""
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def shell_commands() -> list[str]:
    """Every shell command of the README (continuations joined, comments dropped)."""
    commands = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def skip_reason(command: str) -> str | None:
    return next(
        (why for prefix, why in SKIPPED.items() if command.startswith(prefix)), None
    )


def test_every_command_is_run_or_excused():
    commands = shell_commands()
    assert len(commands) >= 5
    unknown = [
        c
        for c in commands
        if skip_reason(c) is None
        and not c.startswith(RUN_PREFIXES)
    ]
    assert not unknown, (
        f"README commands with no smoke test and no stated reason: {unknown}"
    )


RUN_PREFIXES = ("backpack train", "backpack demo", "backpack tokenizer",
                "backpack eval", "backpack web")
CONSOLE = Path(sys.executable).with_name("backpack")  # [project.scripts]


def console(command: str) -> list[str]:
    """The words of a `backpack ...` command, run by this environment's console
    script (or `python -m backpack` where it is not installed)."""
    args = shlex.split(command)
    assert args[0] == "backpack", command
    if CONSOLE.is_file():
        return [str(CONSOLE), *args[1:]]
    return [sys.executable, "-m", "backpack", *args[1:]]


def with_flags(args: list[str], **flags: str) -> list[str]:
    """args with each --flag (underscores as dashes) set to its value."""
    args = list(args)
    for name, value in flags.items():
        flag = f"--{name.replace('_', '-')}"
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def smoke_form(command: str, out_dir: Path) -> list[str]:
    """The command with --max-steps 2 and out_dir as its --out-dir."""
    args = with_flags(console(command), max_steps="2", out_dir=str(out_dir))
    return args + ["--no-progress"]


OWN_TEXT = [  # the section "Your own text", in order
    c for c in shell_commands()
    if c.startswith(("backpack tokenizer", "backpack eval")) or "--train-text" in c
    or c.startswith(("backpack demo --model", "backpack web"))
]
TRAIN_COMMANDS = [
    c for c in shell_commands()
    if c.startswith("backpack train") and c not in OWN_TEXT
]


@pytest.mark.parametrize("command", TRAIN_COMMANDS)
@pytest.mark.slow
def test_training_command_runs(command, tmp_path):
    out = tmp_path / "run"

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            smoke_form(command, out),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = run()
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model" / "config.json").is_file() and (
        out / "results.json"
    ).is_file()
    again = run()  # the same command into the same folder
    assert again.returncode == 1 and "already holds a run" in again.stderr


@pytest.mark.parametrize("index", range(len(blocks("python"))))
@pytest.mark.slow
def test_python_block_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(
        compile(blocks("python")[index], f"README.md python block {index}", "exec"), {}
    )
    assert capsys.readouterr().out.strip()  # the block prints what it shows


DEMO_COMMANDS = [
    c for c in shell_commands() if c.startswith("backpack demo") and c not in OWN_TEXT
]


@pytest.mark.parametrize("command", DEMO_COMMANDS)
@pytest.mark.slow
def test_demo_command_runs(command, tmp_path):
    """The demo as written; the interactive form gets ':quit' on its standard input."""
    args = console(command)
    done = subprocess.run(args, cwd=tmp_path, input=":quit\n", capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loading" in done.stdout
    if "--prompt" in args:
        prompt = args[args.index("--prompt") + 1]
        assert prompt in done.stdout


def test_your_own_text_section_is_found():
    assert [c.split()[1] for c in OWN_TEXT] == [
        "tokenizer", "train", "eval", "demo", "web"]


@pytest.mark.slow
def test_your_own_text_commands_run_in_order(tmp_path):
    """The section "Your own text", as written, on three small files of the corpus:
    its tokenizer, 2 training steps, the perplexity, the demo, the web page (the cache
    in tmp)."""
    from backpack.data import read_text

    text = read_text("validation")[:60_000]
    (tmp_path / "my_texts").mkdir()
    (tmp_path / "my_texts" / "train.txt").write_text(text[:40_000])
    (tmp_path / "my_texts" / "val.txt").write_text(text[40_000:50_000])
    (tmp_path / "held_out.txt").write_text(text[50_000:])
    env = {**os.environ, "BACKPACK_CACHE": str(tmp_path / "cache")}
    outputs = []
    for command in OWN_TEXT:
        args = [word for arg in console(command)
                for word in (sorted(glob.glob(arg, root_dir=tmp_path))
                             if "*" in arg else [arg])]  # as a shell expands it
        if "--train-text" in args:
            args = with_flags(args, max_steps="2", batch_size="2") + ["--no-progress"]
        if args[1] == "demo":
            args = with_flags(args, max_new_tokens="5")
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-3000:])
        outputs.append(done.stdout)
    model = tmp_path / "my_run" / "model"
    assert (model / "tokenizer.json").is_file()  # saved beside the model
    assert "--train-text my_texts/train.txt: encoded with tokenizer" in outputs[1]
    assert outputs[2].startswith("perplexity ") and "cross-entropy" in outputs[2]
    prompt = shlex.split(OWN_TEXT[3])[-1]
    assert f"[unmodified] {prompt}" in outputs[3]
    page = tmp_path / shlex.split(OWN_TEXT[4])[-1]
    assert outputs[4].startswith("wrote ") and (page / "index.html").is_file()
    assert (page / "backpack-web" / "manifest.js").is_file()
