"""`python -m backpack demo` (chapter 9): the non-interactive form and a session fed through
stdin, run in a subprocess as a user would."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_demo(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "backpack", *args], input=stdin, text=True,
                          capture_output=True, cwd=ROOT, env=env, timeout=300)


def test_non_interactive_prompt_with_an_intervention():
    result = run_demo("demo", "--prompt", "The captain said", "--max-new-tokens", "5",
                      "--seed", "1", "--topic", "sea", "1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("loading the Backpack")
    assert "[unmodified] The captain said" in out and "[intervened] The captain said" in out
    again = run_demo("demo", "--prompt", "The captain said", "--max-new-tokens", "5",
                     "--seed", "1", "--topic", "sea", "1")
    assert again.stdout == out  # seeded: the same text twice


def test_interactive_session_through_stdin_survives_bad_input():
    session = "\n".join([":senses nurse", ":senses", ":bogus", ":topic sea -1", ":topic moon 1",
                         ":tokens 0", ":why", "The nurse said", ":why", ":quit",
                         "never read"]) + "\n"
    result = run_demo("demo", "--max-new-tokens", "4", stdin=session)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "loading the Backpack" in out
    assert "␣nurse" in out                                           # the sense table
    assert out.count("unknown command or wrong arguments") == 2        # ':senses' and ':bogus'
    assert "topic strength must be one of [0, 1, 2, 3]" in out and "got -1" in out
    assert "unknown topic 'moon'" in out
    assert "tokens must be between 1 and 200; got 0" in out
    assert "nothing to explain yet" in out
    assert "[unmodified] The nurse said" in out
    assert "largest contributions" in out
    assert "never read" not in out


def test_unknown_subcommand_prints_usage():
    result = run_demo("play")
    assert result.returncode == 2 and "usage: python -m backpack demo" in result.stderr
