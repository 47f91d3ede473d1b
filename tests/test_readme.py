"""The README's commands and code run as written (in a smoke form).

Every fenced block of README.md is read. Python blocks are executed. Each shell
command is either run, with `--max-steps 2` and a temporary `--out-dir`, or skipped
for a stated reason; a command that no rule covers fails the test, so a new README
command has to be run or explicitly excused here.
"""

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
    "python -m backpack.fast":
        "a GPU benchmark of minutes; tests/test_fast.py runs its quick form",
    "python -m backpack data":
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
        and not c.startswith(("python -m backpack.train", "python -m backpack demo"))
    ]
    assert not unknown, (
        f"README commands with no smoke test and no stated reason: {unknown}"
    )


def smoke_form(command: str, out_dir: Path) -> list[str]:
    """The command with this Python, --max-steps 2 and out_dir as its --out-dir."""
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "backpack.train"]
    args = [sys.executable, *args[1:]]
    for flag, value in (("--max-steps", "2"), ("--out-dir", str(out_dir))):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args + ["--no-progress"]


TRAIN_COMMANDS = [
    c for c in shell_commands() if c.startswith("python -m backpack.train")
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


DEMO_COMMANDS = [c for c in shell_commands() if c.startswith("python -m backpack demo")]


@pytest.mark.parametrize("command", DEMO_COMMANDS)
@pytest.mark.slow
def test_demo_command_runs(command, tmp_path):
    """The demo as written; the interactive form gets ':quit' on its standard input."""
    args = [sys.executable, *shlex.split(command)[1:]]
    done = subprocess.run(args, cwd=tmp_path, input=":quit\n", capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loading" in done.stdout
    if "--prompt" in args:
        prompt = args[args.index("--prompt") + 1]
        assert prompt in done.stdout
