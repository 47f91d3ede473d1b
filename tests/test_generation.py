"""Tests of chapter 10's generation with caches (backpack.generation): exactly the
tokens of the plain loop, greedy or seeded, with padding, autocast, a sense table and
interventions."""

import inspect

import pytest
import torch

from backpack.generation import (
    generate_cached,
    generate_uncached,
    left_pad,
    vocab_sense_table,
)
from backpack.model import BackpackLM
from small_models import SMALL, make



@pytest.mark.parametrize("kind", ["backpack", "transformer"])
def test_cached_greedy_equals_uncached(kind):
    model = make(kind)
    idx = torch.randint(
        SMALL["vocab_size"], (3, 7), generator=torch.Generator().manual_seed(1)
    )
    expected = generate_uncached(model, idx, 20, temperature=0)
    torch.testing.assert_close(
        generate_cached(model, idx, 20, temperature=0), expected, rtol=0, atol=0
    )


@pytest.mark.parametrize("kind", ["backpack", "transformer"])
def test_cached_sampling_equals_uncached_with_same_seed(kind):
    model = make(kind)
    idx = torch.randint(
        SMALL["vocab_size"], (4, 5), generator=torch.Generator().manual_seed(2)
    )
    expected = generate_uncached(
        model,
        idx,
        25,
        temperature=0.9,
        top_k=20,
        generator=torch.Generator().manual_seed(7),
    )
    got = generate_cached(
        model,
        idx,
        25,
        temperature=0.9,
        top_k=20,
        generator=torch.Generator().manual_seed(7),
    )
    assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["backpack", "transformer"])
def test_batched_prompts_of_different_lengths(kind):
    model = make(kind)
    prompts = [[5, 9, 2], [7], [1, 2, 3, 4, 5, 6, 7, 8], [3, 3]]
    idx, lengths = left_pad(prompts, pad_id=0)
    got = generate_cached(model, idx, 15, temperature=0, prompt_lengths=lengths)
    width = idx.shape[1]
    for row, prompt in enumerate(prompts):
        alone = generate_uncached(model, torch.tensor([prompt]), 15, temperature=0)[0]
        assert torch.equal(got[row, width - len(prompt) :], alone)


@pytest.mark.parametrize("kind", ["backpack", "transformer"])
def test_cached_generation_under_bf16_autocast(kind):
    """Autocast computes keys, values and senses in bf16: the cache holds them so (the
    GPU benchmark runs generation under autocast)."""
    idx = torch.randint(
        SMALL["vocab_size"], (3, 5), generator=torch.Generator().manual_seed(8)
    )
    for dtype in (torch.float32, torch.float64):  # autocast casts float32 only
        model = make(kind, dtype=dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cached = generate_cached(model, idx, 12, 0.0)
            assert torch.equal(cached, generate_uncached(model, idx, 12, 0.0))


def test_cached_fp32_logits_close_and_greedy_equal():
    model = make(dtype=torch.float32)
    idx = torch.randint(
        SMALL["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(
        generate_cached(model, idx, 12, temperature=0),
        generate_uncached(model, idx, 12, temperature=0),
    )


def test_sense_table_gives_same_tokens():
    model = make()
    idx = torch.randint(
        SMALL["vocab_size"], (2, 4), generator=torch.Generator().manual_seed(4)
    )
    table = vocab_sense_table(model, chunk=10)
    assert table.shape == (SMALL["vocab_size"], SMALL["num_senses"], SMALL["n_embd"])
    assert torch.equal(
        generate_cached(model, idx, 10, temperature=0, sense_table=table),
        generate_uncached(model, idx, 10, temperature=0),
    )


def position_and_history_edit(idx, senses):
    """An edit that depends on the position and on every token so far, like topic
    annealing."""
    n = idx.shape[1]
    seen_odd = (idx % 2 == 1).double().cumsum(-1)  # (b, n)
    weight = 1 + 2 * torch.sigmoid(seen_odd - torch.arange(n) / 4)  # (b, n)
    return senses * weight[:, None, :, None]


@pytest.mark.parametrize("padded", [False, True])
def test_sense_edits_act_in_cached_generation(padded):
    model = make()
    model.sense_edits.append(position_and_history_edit)
    prompts = [[5, 9, 2, 4], [7, 1]] if padded else [[5, 9, 2, 4], [7, 1, 8, 8]]
    idx, lengths = left_pad(prompts)
    got = generate_cached(model, idx, 12, temperature=0, prompt_lengths=lengths)
    plain = make()
    for row, prompt in enumerate(prompts):
        alone = generate_uncached(model, torch.tensor([prompt]), 12, temperature=0)[0]
        assert torch.equal(got[row, idx.shape[1] - len(prompt) :], alone)
    assert not torch.equal(
        got, generate_cached(plain, idx, 12, temperature=0, prompt_lengths=lengths)
    )


def test_generation_arguments_are_checked():
    model = make()
    idx = torch.zeros(2, 10, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds the context"):
        generate_cached(model, idx, 40)
    with pytest.raises(ValueError, match="longer than the model's context"):
        generate_cached(model, torch.zeros(1, 49, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_cached(model, idx, -1)
    with pytest.raises(ValueError, match="temperature"):
        generate_cached(model, idx, 3, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        generate_cached(model, idx, 3, top_k=0)
    with pytest.raises(
        ValueError, match="top_k=98 is larger than the vocabulary of 97"
    ):
        generate_cached(model, idx, 3, top_k=98)
    with pytest.raises(ValueError, match="prompt_lengths"):
        generate_cached(model, idx, 3, prompt_lengths=torch.tensor([3, 11]))
    with pytest.raises(ValueError, match="token id"):
        generate_cached(model, torch.full((1, 3), 97), 3)
    assert torch.equal(generate_cached(model, idx, 0), idx)


@pytest.mark.slow
def test_topic_steering_from_chapter_9_works_with_the_cache():
    """Topic control anneals its weights with the tokens generated so far: the cached
    path must
    give the same greedy and seeded-sampled tokens as the uncached one."""
    interventions = pytest.importorskip("backpack.interventions")
    model = make()
    scores = -torch.arange(97 * 4, dtype=torch.float32).view(97, 4)
    steering = interventions.TopicSteering(
        model, interventions.topic_weights(scores, 3)
    )
    idx = torch.randint(
        SMALL["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(8)
    )
    plain = generate_cached(model, idx, 15, temperature=0)
    with interventions.intervene(model, steering):
        steered = generate_cached(model, idx, 15, temperature=0)
        assert torch.equal(steered, generate_uncached(model, idx, 15, temperature=0))
        sampled = [
            f(
                model,
                idx,
                15,
                temperature=1.0,
                generator=torch.Generator().manual_seed(1),
            )
            for f in (generate_cached, generate_uncached)
        ]
        assert torch.equal(*sampled)
    assert not torch.equal(steered, plain)


@pytest.mark.parametrize("kind", ["backpack", "transformer"])
def test_model_generate_uses_the_cache_by_default(kind):
    if "use_cache" not in inspect.signature(BackpackLM.generate).parameters:
        pytest.skip(
            "LanguageModel.generate has no use_cache switch (not wired to the cache)"
        )
    model = make(kind)
    idx = torch.randint(
        SMALL["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(9)
    )
    fast = model.generate(idx, 10, temperature=0)
    assert torch.equal(fast, generate_uncached(model, idx, 10, temperature=0))
    long = model.generate(
        idx, 60, temperature=0, sliding_window=True
    )  # past the context
    assert long.shape == (2, 65)
