"""Bad inputs to chapter 9's intervention API, chapter 8's contributions and chapter 5's
generate get a clear error: the exception type and a message naming the problem and fix.

Each case is (what is wrong, a function that does it, the error expected, a pattern the
message must match), as in tests/test_errors.py. After the cases: the inputs that must
be accepted (integer-like sense indices, the smallest temperature, top_k = vocab).
"""

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from backpack.analysis import contributions
from backpack.interventions import (
    SenseScale,
    add_to_senses,
    as_run,
    continuation_perplexity,
    intervene,
    last_logits,
    replace_senses,
    reweight,
    sense_gap_contributions,
)
from backpack.model import (
    MIN_TEMPERATURE,
    BackpackConfig,
    BackpackLM,
    sample_next_token,
)

SMALL = dict(
    vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2, num_senses=4
)
WORDS = ["[UNK]", "the", "nurse", "said", "that", "he", "she", "ran"]


def small_model() -> BackpackLM:
    torch.manual_seed(0)
    return BackpackLM(BackpackConfig(**SMALL)).eval()


def tiny_tokenizer() -> Tokenizer:
    """One token per word of WORDS, split on whitespace."""
    vocab = {word: n for n, word in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


MODEL = small_model()
TOKENIZER = tiny_tokenizer()
PROMPT = torch.tensor([[1, 2, 3]])


def with_non_finite(*where, value=float("nan")) -> torch.Tensor:
    senses = torch.zeros(SMALL["num_senses"], SMALL["n_embd"])
    for sense, dim in where:
        senses[sense, dim] = value
    return senses


def enter(*edits):
    with intervene(MODEL, *edits):
        pass


def scale_one() -> SenseScale:
    return reweight(MODEL, [5], senses=[0], weight=0.0)


CASES = [
    # --- replace_senses / add_to_senses: finite vectors only (fix 1) ---
    (
        "NaN senses",
        lambda: replace_senses(MODEL, 5, with_non_finite((0, 1), (2, 5))),
        ValueError,
        r"new_senses holds 2 non-finite value\(s\) \(NaN or inf\), at \(sense, dim\) "
        r"\(0, 1\), \(2, 5\): they would make every logit NaN; give finite numbers",
    ),
    (
        "infinite delta",
        lambda: add_to_senses(MODEL, 5, with_non_finite((3, 0), value=float("inf"))),
        ValueError,
        r"delta holds 1 non-finite value\(s\) .* at \(sense, dim\) \(3, 0\)",
    ),
    (
        "many NaNs, the first few shown",
        lambda: replace_senses(MODEL, 5, torch.full((4, 16), float("nan"))),
        ValueError,
        r"holds 64 non-finite value\(s\) .*\(0, 0\), \(0, 1\), \(0, 2\), \(0, 3\), "
        r"\.\.\.:",
    ),
    # --- reweight: something to reweight (fix 2) ---
    (
        "no tokens",
        lambda: reweight(MODEL, [], senses=[0], weight=0.0),
        ValueError,
        r"no tokens given, so the edit would change nothing: pass at least one token",
    ),
    (
        "no senses",
        lambda: reweight(MODEL, [5], senses=[], weight=0.0),
        ValueError,
        r"no senses given, so the edit would change nothing: pass at least one sense "
        r"index, e.g. senses=\[3\]",
    ),
    (
        "an empty tensor of senses",
        lambda: reweight(
            MODEL, [5], senses=torch.tensor([], dtype=torch.long), weight=0
        ),
        ValueError,
        r"no senses given",
    ),
    (
        "tokens as one int",
        lambda: reweight(MODEL, 5, senses=[0], weight=0.0),
        TypeError,
        r"tokens must be a list of token ids or token runs, e.g. \[nurse_id\] .*got 5",
    ),
    # --- reweight: sense indices are integers (fix 3) ---
    (
        "a float sense",
        lambda: reweight(MODEL, [5], senses=1.0, weight=0.0),
        TypeError,
        r"a sense index must be an integer; got 1.0 of type float: pass e.g. senses=3",
    ),
    (
        "a bool sense",
        lambda: reweight(MODEL, [5], senses=True, weight=0.0),
        TypeError,
        r"a sense index must be an integer; got True of type bool",
    ),
    (
        "a float among the senses",
        lambda: reweight(MODEL, [5], senses=[0, 2.0], weight=0.0),
        TypeError,
        r"got 2.0 of type float",
    ),
    (
        "a float tensor of senses",
        lambda: reweight(MODEL, [5], senses=torch.tensor([1.0]), weight=0.0),
        TypeError,
        r"a sense index must be an integer; got 1.0 of type float",
    ),
    (
        "a bool tensor",
        lambda: reweight(MODEL, [5], senses=torch.tensor(True), weight=0.0),
        TypeError,
        r"got True of type bool",
    ),
    (
        "a numpy float",
        lambda: reweight(MODEL, [5], senses=np.float64(2), weight=0.0),
        TypeError,
        r"a sense index must be an integer; got .*2.0.* of type float64",
    ),
    (
        "no senses at all (None)",
        lambda: reweight(MODEL, [5], senses=None, weight=0.0),
        TypeError,
        r"senses must be a sense index or several; got None",
    ),
    (
        "a numpy integer out of range",
        lambda: reweight(MODEL, [5], senses=np.int64(4), weight=0.0),
        IndexError,
        r"sense index 4 is out of range: this model has senses 0 to 3",
    ),
    (
        "a 0-d tensor out of range",
        lambda: reweight(MODEL, [5], senses=torch.tensor(-1), weight=0.0),
        IndexError,
        r"sense index -1 is out of range",
    ),
    # --- intervene: each edit is callable as edit(idx, senses) (fix 4) ---
    (
        "an int as an edit",
        lambda: enter(3),
        TypeError,
        r"edit 0 is 3 of type int, not a sense edit: pass what reweight, "
        r"replace_senses or add_to_senses return, or a function \(idx, senses\)",
    ),
    (
        "a string as the second edit",
        lambda: enter(scale_one(), "nurse"),
        TypeError,
        r"edit 1 is 'nurse' of type str, not a sense edit",
    ),
    (
        "a list of edits",
        lambda: enter([scale_one()]),
        TypeError,
        r"edit 0 is \[.*\] of type list: pass several edits as separate arguments, "
        r"intervene\(model, \*edits\)",
    ),
    (
        "an edit class, not an edit",
        lambda: enter(SenseScale),
        TypeError,
        r"of type type, not a sense edit",
    ),
    (
        "a function of one argument",
        lambda: enter(lambda senses: senses),
        TypeError,
        r"of type function, which cannot be called as edit\(idx, senses\)",
    ),
    (
        "a tensor as an edit",
        lambda: enter(torch.zeros(4, 16)),
        TypeError,
        r"edit 0 is .* of type Tensor, not a sense edit",
    ),
    # --- prompts: none empty (fix 5) ---
    (
        "contributions of an empty prompt",
        lambda: contributions(MODEL, torch.tensor([], dtype=torch.long), 3),
        ValueError,
        r"the prompt is empty \(its text may encode to no tokens\): contributions "
        r"explain a prediction at one of its positions, so give at least one token",
    ),
    (
        "contributions of an empty (1, 0) prompt",
        lambda: contributions(MODEL, torch.zeros(1, 0, dtype=torch.long), 3),
        ValueError,
        r"the prompt is empty",
    ),
    (
        "contributions of an empty list (a float tensor)",
        lambda: contributions(MODEL, [], 3),
        ValueError,
        r"the prompt is empty",
    ),
    (
        "last_logits with an empty prompt among others",
        lambda: last_logits(MODEL, TOKENIZER, ["the nurse said", "", "he ran"]),
        ValueError,
        r"1 prompt\(s\) encode to no tokens, the first is prompt 1 \(''\): a "
        r"prediction needs at least one token before it",
    ),
    (
        "last_logits of no prompts",
        lambda: last_logits(MODEL, TOKENIZER, []),
        ValueError,
        r"no prompts given: pass a list of at least one text",
    ),
    (
        "last_logits of a bare string",
        lambda: last_logits(MODEL, TOKENIZER, "the nurse said"),
        TypeError,
        r"prompts must be a list of texts; for one prompt pass \['the nurse said'\]",
    ),
    (
        "sense_gap_contributions with an empty prompt",
        lambda: sense_gap_contributions(MODEL, TOKENIZER, ["  "], [(2,)]),
        ValueError,
        r"1 prompt\(s\) encode to no tokens, the first is prompt 0 \('  '\)",
    ),
    (
        "continuation_perplexity of an empty prompt",
        lambda: continuation_perplexity(MODEL, torch.tensor([[1, 2, 3, 4]]), 0),
        ValueError,
        r"prompt_length 0 must be in \[1, 3\] for samples of 4 tokens",
    ),
    (
        "continuation_perplexity with nothing generated",
        lambda: continuation_perplexity(MODEL, torch.tensor([[1, 2, 3, 4]]), 4),
        ValueError,
        r"prompt_length 4 must be in \[1, 3\]",
    ),
    # --- generate's arguments (fix 6) ---
    (
        "a temperature that overflows",
        lambda: MODEL.generate(PROMPT, 2, temperature=1e-45),
        ValueError,
        r"temperature 1e-45 is too small: the logits / temperature can overflow to "
        r"inf; use a temperature >= 0.0001, or temperature=0 for greedy decoding",
    ),
    (
        "a temperature just below the smallest",
        lambda: MODEL.generate(PROMPT, 2, temperature=9e-5, use_cache=False),
        ValueError,
        r"temperature 9e-05 is too small",
    ),
    (
        "top_k larger than the vocabulary",
        lambda: MODEL.generate(PROMPT, 2, top_k=51),
        ValueError,
        r"top_k=51 is larger than the vocabulary of 50 tokens: pass top_k <= 50, or "
        r"top_k=None for no cut",
    ),
    (
        "top_k zero",
        lambda: MODEL.generate(PROMPT, 2, top_k=0),
        ValueError,
        r"top_k must be None \(no cut\) or an integer >= 1; got 0",
    ),
    (
        "negative top_k",
        lambda: MODEL.generate(PROMPT, 2, top_k=-3),
        ValueError,
        r"top_k must be None \(no cut\) or an integer >= 1; got -3",
    ),
    (
        "float top_k",
        lambda: MODEL.generate(PROMPT, 2, top_k=2.5),
        ValueError,
        r"top_k must be None \(no cut\) or an integer >= 1; got 2.5",
    ),
    (
        "bool top_k",
        lambda: MODEL.generate(PROMPT, 2, top_k=True),
        ValueError,
        r"top_k must be None \(no cut\) or an integer >= 1; got True",
    ),
    (
        "negative max_new_tokens",
        lambda: MODEL.generate(PROMPT, -1),
        ValueError,
        r"max_new_tokens must be an integer >= 0; got -1",
    ),
    (
        "float max_new_tokens",
        lambda: MODEL.generate(PROMPT, 2.0),
        ValueError,
        r"max_new_tokens must be an integer >= 0; got 2.0",
    ),
    (
        "max_new_tokens of None",
        lambda: MODEL.generate(PROMPT, None),
        ValueError,
        r"max_new_tokens must be an integer >= 0; got None",
    ),
    (
        "a string temperature",
        lambda: MODEL.generate(PROMPT, 2, temperature="0.5"),
        ValueError,
        r"temperature must be a finite number >= 0 \(0 = greedy\); got '0.5'",
    ),
    (
        "an infinite temperature",
        lambda: MODEL.generate(PROMPT, 2, temperature=float("inf")),
        ValueError,
        r"temperature must be a finite number >= 0 \(0 = greedy\); got inf",
    ),
]


@pytest.mark.parametrize(
    "make, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_clearly(make, error, message):
    with pytest.raises(error, match=message):
        make()
    assert MODEL.sense_edits == []  # a refused edit is never installed


def logits_with(*edits) -> torch.Tensor:
    idx = torch.tensor([[5, 7, 9, 5, 3]])
    with intervene(MODEL, *edits):
        with torch.no_grad():
            return MODEL(idx).logits


@pytest.mark.parametrize(
    "senses",
    [np.int64(3), np.int32(3), torch.tensor(3), torch.tensor([3]), np.array(3)],
    ids=["np.int64", "np.int32", "0-d tensor", "1-element tensor", "0-d array"],
)
def test_an_integer_like_scalar_is_one_sense(senses):
    edit = reweight(MODEL, [5], senses=senses, weight=0.0)
    expected = reweight(MODEL, [5], senses=[3], weight=0.0)
    assert torch.equal(edit.table[(5,)], expected.table[(5,)])
    assert torch.equal(logits_with(edit), logits_with(expected))


@pytest.mark.parametrize(
    "senses",
    [torch.tensor([0, 2]), np.array([0, 2]), range(0, 3, 2), (0, 2), [np.int64(0), 2]],
    ids=["tensor", "array", "range", "tuple", "numpy ints in a list"],
)
def test_integer_arrays_and_sequences_are_several_senses(senses):
    edit = reweight(MODEL, [5], senses=senses, weight=0.5)
    assert edit.table[(5,)].tolist() == [0.5, 1.0, 0.5, 1.0]


def test_numpy_token_ids_are_token_runs():
    assert as_run(np.int64(5)) == (5,) == as_run(torch.tensor(5))
    edit = reweight(MODEL, np.array([5, 7]), senses=0, weight=0.0)
    assert set(edit.table) == {(5,), (7,)}


def test_a_function_of_idx_and_senses_is_an_edit():
    def double(idx, senses):
        return 2 * senses

    plain = logits_with()
    assert not torch.equal(logits_with(double), plain)
    assert torch.equal(logits_with(), plain) and MODEL.sense_edits == []


def test_the_smallest_temperature_samples_without_nan():
    prompt = torch.tensor([[1, 2, 3, 4]])
    for use_cache in (True, False):
        out = MODEL.generate(
            prompt, 5, temperature=MIN_TEMPERATURE, use_cache=use_cache
        )
        assert out.shape == (1, 9) and 0 <= int(out.min()) <= int(out.max()) < 50
    # logits 1e6 apart after the division: a draw that is the argmax, not NaN
    logits = torch.tensor([[-100.0, 100.0, 0.0]])
    assert sample_next_token(logits, MIN_TEMPERATURE, None).tolist() == [[1]]


def test_top_k_equal_to_the_vocabulary_is_no_cut():
    def sample(top_k):
        generator = torch.Generator().manual_seed(0)
        return MODEL.generate(PROMPT, 6, top_k=top_k, generator=generator)

    assert torch.equal(sample(SMALL["vocab_size"]), sample(None))


def test_last_logits_reads_each_prompt_at_its_last_token():
    prompts = ["the nurse said that", "he ran", "she"]
    got = last_logits(MODEL, TOKENIZER, prompts, batch_size=2)
    for row, prompt in enumerate(prompts):
        ids = torch.tensor([TOKENIZER.encode(prompt).ids])
        with torch.no_grad():
            alone = MODEL(ids).logits[0, -1]
        torch.testing.assert_close(got[row], alone, atol=1e-5, rtol=1e-5)
