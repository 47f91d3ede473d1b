"""`python -m backpack demo` (chapter 9): the non-interactive form and a session fed
through stdin, run in a subprocess as a user would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_demo(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "backpack", *args],
        input=stdin,
        text=True,
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def continuations(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("[")]


@pytest.mark.slow
def test_non_interactive_prompt_with_an_intervention(tmp_path):
    args = (
        "demo",
        "--prompt",
        "The captain said",
        "--max-new-tokens",
        "5",
        "--seed",
        "1",
        "--topic",
        "sea",
        "1",
    )
    result = run_demo(*args, BACKPACK_CACHE=str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("loading the Backpack")
    # the slow step says what it does before it starts, and shows its progress
    assert "scoring 16,384 x 16 senses against the vocabulary (once;" in out
    assert " 10% 20% 30% 40% 50% 60% 70% 80% 90% 100% done in " in out
    assert out.index("scoring 16,384") < out.index("[unmodified]")
    assert (
        "[unmodified] The captain said" in out
        and "[intervened] The captain said" in out
    )
    assert len(list((tmp_path / "sense_peaks").glob("*.safetensors"))) == 1
    again = run_demo(*args, BACKPACK_CACHE=str(tmp_path))
    assert "scoring 16,384 x 16" not in again.stdout  # the peaks come from the cache
    assert continuations(again.stdout) == continuations(
        out
    )  # seeded: the same text twice


def test_cached_peaks_are_the_computed_ones(tmp_path, monkeypatch):
    """The demo's cache of sense_peaks returns exactly what sense_peaks computes, and a
    model with other weights gets its own entry."""
    import io

    import torch

    import backpack.demo as demo_module
    from backpack.demo import Demo, cached_sense_peaks
    from backpack.interventions import sense_peaks
    from backpack.model import BackpackConfig, BackpackLM

    monkeypatch.setattr(demo_module, "CACHE_DIR", tmp_path)
    torch.manual_seed(0)
    config = BackpackConfig(
        vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, num_senses=4
    )
    model = BackpackLM(config).eval()

    def fresh_demo() -> Demo:
        demo = Demo.__new__(Demo)  # the state without loading the book's model
        demo.model, demo.out, demo.peaks = model, io.StringIO(), None
        return demo

    computed = cached_sense_peaks(fresh_demo())
    assert torch.equal(computed, sense_peaks(model))
    loaded = fresh_demo()
    assert torch.equal(cached_sense_peaks(loaded), computed)
    assert loaded.out.getvalue() == ""  # from the file, silently
    with torch.no_grad():
        model.sense_network.final_mlp.c_proj.weight.add_(0.1)
    changed = fresh_demo()
    assert torch.equal(cached_sense_peaks(changed), sense_peaks(model))
    assert "scoring" in changed.out.getvalue()
    assert len(list((tmp_path / "sense_peaks").glob("*.safetensors"))) == 2


@pytest.mark.slow
def test_interactive_session_through_stdin_survives_bad_input():
    session = (
        "\n".join(
            [
                ":senses nurse",
                ":senses",
                ":bogus",
                ":topic sea -1",
                ":topic moon 1",
                ":tokens 0",
                ":why",
                "The nurse said",
                ":why",
                ":quit",
                "never read",
            ]
        )
        + "\n"
    )
    result = run_demo("demo", "--max-new-tokens", "4", stdin=session)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "loading the Backpack" in out
    assert "␣nurse" in out  # the sense table
    assert (
        out.count("unknown command or wrong arguments") == 2
    )  # ':senses' and ':bogus'
    assert "topic strength must be one of [0, 1, 2, 3]" in out and "got -1" in out
    assert "unknown topic 'moon'" in out
    assert "tokens must be between 1 and 255 (the context holds 256 positions" in out
    assert "nothing to explain yet" in out
    assert "[unmodified] The nurse said" in out
    assert "largest contributions" in out
    assert "never read" not in out


def test_unknown_subcommand_prints_usage():
    result = run_demo("play")
    assert (
        result.returncode == 2 and "usage: python -m backpack COMMAND" in result.stderr
    )
    assert "unknown command 'play'" in result.stderr
    assert "demo [--model FOLDER] [--prompt TEXT]" in result.stderr


@pytest.mark.slow
def test_help_documents_every_option_with_its_default():
    assert run_demo("--help").returncode == 0
    text = run_demo("demo", "--help").stdout
    for flag in [
        "--prompt",
        "--max-new-tokens",
        "--seed",
        "--debias",
        "--topic",
        "--edit",
        "--model",
        "--tokenizer",
    ]:
        assert flag in text
    assert text.count("(default:") == 8


@pytest.mark.slow
def test_fact_edit_flag_and_commands():
    result = run_demo(
        "demo",
        "--prompt",
        "said Sherlock",
        "--max-new-tokens",
        "3",
        "--seed",
        "0",
        "--edit",
        "Sherlock",
        "Holmes",
        "Smith",
    )
    assert result.returncode == 0, result.stderr
    assert "'␣Sherlock' predicts '␣Smith' where it predicted '␣Holmes'" in result.stdout
    assert "[unmodified] said Sherlock Holmes" in result.stdout
    assert (
        "[intervened] said Sherlock Smith" in result.stdout
    )  # the edit, measured in ch. 9
    session = (
        "\n".join(
            [
                ":edit Sherlock Holmes Smithereens",
                ":edit Sherlock Holmes",
                ":topic sea x",
                ":tokens many",
                ":edit Sherlock Holmes Smith",
                ":topic sea 1",
                ":topic off",
                ":edit off",
                "said Sherlock",
            ]
        )
        + "\n"
    )
    out = run_demo("demo", "--max-new-tokens", "3", "--seed", "0", stdin=session).stdout
    assert "' Smithereens' is not in the vocabulary as one token" in out
    # ':edit' with two words
    assert out.count("unknown command or wrong arguments") == 1
    assert "strength must be a whole number; got 'x'" in out
    assert "tokens must be a whole number; got 'many'" in out
    assert "now on: topic sea at strength 1; '␣Sherlock' predicts '␣Smith'" in out
    after = out.split("edit off: no intervention on\n")[1]  # everything off again:
    assert (
        after.startswith("[unmodified] said Sherlock Holmes")
        and "[intervened]" not in after
    )


@pytest.mark.slow
def test_a_prompt_longer_than_the_context_is_shortened_with_a_message():
    session = ":tokens 250\n" + "word " * 20 + "END\n"
    out = run_demo("demo", "--seed", "0", stdin=session).stdout
    assert "the prompt has 22 tokens and only 6 fit before the 250 new ones" in out
    shown = out.split("[unmodified] ")[1]
    # the part used
    assert shown.startswith("… word word word word") and "END" in shown[:30]
    assert "word " * 6 not in shown


@pytest.mark.slow
def test_fresh_seed_per_prompt_printed_and_repeatable():
    session = "It was a\nIt was a\n"
    out = run_demo("demo", "--max-new-tokens", "6", stdin=session).stdout
    seeds = [line.split()[1] for line in out.splitlines() if line.startswith("seed ")]
    assert len(seeds) == 2 and seeds[0] != seeds[1]
    first = continuations(out)[0]
    again = run_demo(
        "demo", "--max-new-tokens", "6", "--seed", seeds[0], "--prompt", "It was a"
    ).stdout
    assert continuations(again) == [first] and "seed " not in again  # fixed: as printed


@pytest.mark.slow
def test_why_explains_the_edited_prediction_and_bad_values_are_refused():
    session = (
        "\n".join(
            [
                ":edit Sherlock Holmes Smith",
                ":seed 1",
                "said Sherlock",
                ":why",
                ":edit off",
                "said Sherlock",
                ":why",
                ":tokens 300",
                ":tokens -5",
                ":seed 99999999999999999999999",
                ":seed -1",
                "said Sherlock",
            ]
        )
        + "\n"
    )
    result = run_demo("demo", "--max-new-tokens", "2", stdin=session)
    assert result.returncode == 0, result.stderr
    why = result.stdout.split("largest contributions")
    edited = "'␣Sherlock' predicts '␣Smith' where it predicted '␣Holmes':\n"
    assert why[0].endswith(edited + "next token '␣Smith' (unmodified: '␣Holmes'); ")
    assert why[1].endswith("no intervention on: next token '␣Holmes'; ")
    assert result.stdout.count("tokens must be between 1 and 255") == 2
    assert result.stdout.count("seed must be between 0 and 2**63 - 1") == 2
    assert result.stdout.count("[unmodified] said Sherlock") == 3  # still going


@pytest.mark.slow
def test_bytes_that_are_not_utf8_are_replaced():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "backpack",
            "demo",
            "--max-new-tokens",
            "2",
            "--seed",
            "0",
        ],
        input=b"caf\xe9 \xff ok\n:quit\n",
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "[unmodified] caf\ufffd \ufffd ok" in result.stdout.decode()


@pytest.mark.slow
def test_widget_runs_the_commands_of_its_choices():
    import html
    import io

    from backpack.demo import Demo, demo_widget, run_lines, widget_commands

    assert widget_commands("Hi", True, "sea", 2, "Sherlock Holmes Smith", 3) == [
        ":debias on",
        ":topic sea 2",
        ":edit Sherlock Holmes Smith",
        ":seed 3",
        "Hi",
    ]
    assert widget_commands("Hi", False, "none", 2, " ", 0)[:3] == [
        ":debias off",
        ":topic off",
        ":edit off",
    ]
    demo = Demo(out=io.StringIO(), max_new_tokens=3)
    box = demo_widget(demo)
    prompt, (debias, topic, strength), (edit, seed, button), transcript = (
        box.children[0],
        box.children[1].children,
        box.children[2].children,
        box.children[3],
    )
    shown = html.unescape(transcript.value)
    assert "backpack> The nurse said that" in shown  # drawn at once
    assert debias.value is False and seed.value == 0  # the controls start off
    prompt.value, topic.value, strength.value, edit.value, seed.value = (
        "said Sherlock",
        "sea",
        1,
        "Sherlock Holmes Smith",
        7,
    )
    button.click()
    shown = html.unescape(transcript.value)
    # the commands read every control: debias off, the seed given
    lines = widget_commands(
        "said Sherlock", debias.value, "sea", 1, "Sherlock Holmes Smith", 7
    )
    assert lines[0] == ":debias off" and ":seed 7" in lines
    assert [
        line.split("backpack> ")[1]
        for line in shown.splitlines()
        if "backpack> " in line
    ] == lines
    assert "[intervened] said Sherlock" in shown and not button.disabled
    scores = demo.scores_by_topic["sea"]  # scored once, kept for the next click
    button.click()
    assert demo.scores_by_topic["sea"] is scores
    # and the same continuations
    assert [
        x for x in html.unescape(transcript.value).splitlines() if x.startswith("[")
    ] == [x for x in shown.splitlines() if x.startswith("[")]
    # the same lines give the same continuations outside the widget
    again = run_lines(demo, lines)
    assert [x for x in again.splitlines() if x.startswith("[")] == [
        x for x in shown.splitlines() if x.startswith("[")
    ]
