"""The intervention API of chapter 9 (backpack.interventions), on a small random
Backpack."""

import pytest
import torch

from backpack.interventions import (
    TopicSteering,
    add_to_senses,
    check_strength,
    edit_senses,
    fit_sense_weights,
    intervene,
    occurrences,
    replace_senses,
    reweight,
    token_senses,
    topic_weights,
)
from backpack.model import BackpackConfig, BackpackLM


def tiny_backpack(seed: int = 0) -> BackpackLM:
    torch.manual_seed(seed)
    config = BackpackConfig(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, num_senses=4
    )
    model = BackpackLM(config).eval()
    # larger weights than at initialisation: peaked, testable predictions
    with torch.no_grad():
        model.transformer.wte.weight.mul_(20)
    return model


IDX = torch.tensor([[5, 7, 9, 5, 3, 7, 9, 1], [2, 5, 6, 7, 9, 4, 5, 8]])


def logits(model, idx=IDX):
    with torch.no_grad():
        return model(idx).logits


def test_weight_one_is_bit_identical():
    model = tiny_backpack()
    plain = logits(model)
    with intervene(model, reweight(model, [5, (7, 9)], senses=[0, 2], weight=1.0)):
        assert torch.equal(logits(model), plain)


def test_weight_zero_equals_zeroing_the_sense_by_hand():
    model = tiny_backpack()
    with intervene(model, reweight(model, [5], senses=[1], weight=0.0)):
        edited = logits(model)

    def zero_by_hand(idx, senses):
        senses = senses.clone()
        # sense 1 of every position holding token 5
        senses[:, 1][idx == 5] = 0.0
        return senses

    model.sense_edits.append(zero_by_hand)
    by_hand = logits(model)
    model.sense_edits.clear()
    assert torch.equal(edited, by_hand)
    assert not torch.allclose(edited, logits(model))


def test_weight_zero_equals_zeroed_contextualization_weights():
    model = tiny_backpack()
    with intervene(model, reweight(model, [5], senses=[1], weight=0.0)):
        edited = logits(model)
    with torch.no_grad():
        # (b, k, n, n)
        alpha = model(IDX, return_senses=True).contextualization.clone()
        # (b, n, n) sources
        mask = (IDX == 5)[:, None, :].expand(-1, alpha.shape[2], -1)
        alpha[:, 1][mask] = 0.0
        by_alpha = model(IDX, contextualization=alpha).logits
    assert torch.allclose(edited, by_alpha, atol=1e-5)


def test_two_interventions_compose_in_either_order():
    model = tiny_backpack()
    a = reweight(model, [5, 7], senses=[0], weight=0.3)
    b = add_to_senses(model, 9, torch.randn(4, 32))
    with intervene(model, a, b):
        ab = logits(model)
    with intervene(model, b, a):
        ba = logits(model)
    with intervene(model, a):
        with intervene(model, b):
            nested = logits(model)
    assert torch.allclose(ab, ba, atol=1e-5) and torch.allclose(ab, nested, atol=1e-5)


def test_leaving_the_context_restores_exact_outputs_even_after_an_error():
    model = tiny_backpack()
    plain = logits(model)
    other = lambda idx, senses: senses * 1.0  # noqa: E731 - an edit installed by someone else
    model.sense_edits.append(other)
    with pytest.raises(RuntimeError):
        with intervene(model, reweight(model, [5], senses=range(4), weight=0.0)):
            assert not torch.equal(logits(model), plain)
            raise RuntimeError("inside the block")
    assert model.sense_edits == [other]
    model.sense_edits.clear()
    assert torch.equal(logits(model), plain)


@pytest.mark.slow
def test_batched_generation_matches_row_by_row():
    model = tiny_backpack()
    prompts = torch.tensor([[5, 7, 9], [3, 5, 2], [9, 9, 5]])
    edit = reweight(model, [5], senses=[0, 3], weight=0.0)
    plain = model.generate(prompts, 6, temperature=0)
    plain_logits = model(prompts).logits
    with intervene(model, edit):
        batch = model.generate(prompts, 6, temperature=0)
        rows = [model.generate(p[None], 6, temperature=0) for p in prompts]
        edited_logits = model(prompts).logits                      # (3, 3, vocab)
    assert torch.equal(batch, torch.cat(rows))
    # the edit acts on every row: each prompt holds token 5, whose senses were zeroed
    assert ((edited_logits - plain_logits).abs().amax(dim=(1, 2)) > 1e-6).all()
    # weight 1 is no edit: generation is the plain one
    with intervene(model, reweight(model, [5], senses=[0], weight=1.0)):
        assert torch.equal(model.generate(prompts, 6, temperature=0), plain)


def test_sampled_generation_changes_inside_and_restores_after():
    model = tiny_backpack()
    prompts = torch.tensor([[5, 7, 9]] * 4)
    plain = model.generate(prompts, 8, temperature=0.05,
                           generator=torch.Generator().manual_seed(0))
    with intervene(model, replace_senses(model, 5, torch.zeros(4, 32)),
                   reweight(model, [7, 9], senses=range(4), weight=3.0)):
        steered = model.generate(prompts, 8, temperature=0.05,
                           generator=torch.Generator().manual_seed(0))
    again = model.generate(prompts, 8, temperature=0.05,
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, again) and not torch.equal(plain, steered)


def test_multi_token_runs_match_only_whole_words():
    idx = torch.tensor([[1, 2, 3, 2, 3, 1, 2]])
    assert occurrences(idx, (1, 2)).int().tolist() == [[1, 1, 0, 0, 0, 1, 1]]
    assert occurrences(idx, (2,)).int().tolist() == [[0, 1, 0, 1, 0, 0, 1]]
    assert not occurrences(idx[:, :1], (1, 2)).any()


def test_add_and_replace_agree_with_scaling():
    model = tiny_backpack()
    senses = token_senses(model, 5)
    with intervene(model, reweight(model, [5], senses=range(4), weight=2.0)):
        scaled = logits(model)
    with intervene(model, add_to_senses(model, 5, senses)):
        added = logits(model)
    with intervene(model, replace_senses(model, 5, 2 * senses)):
        replaced = logits(model)
    assert torch.allclose(scaled, added, atol=1e-5) and torch.allclose(
        scaled, replaced, atol=1e-5
    )


def test_bad_input_names_the_value_and_the_range():
    model = tiny_backpack()
    with pytest.raises(IndexError, match="sense index 4 is out of range.*0 to 3"):
        reweight(model, [5], senses=4, weight=0.0)
    with pytest.raises(ValueError, match="token id 64 is outside the vocabulary"):
        reweight(model, [64], senses=0, weight=0.0)
    with pytest.raises(ValueError, match="topic strength must be one of"):
        check_strength(-1)
    with pytest.raises(ValueError, match="2 weights for 3 tokens"):
        reweight(model, [1, 2, 3], senses=0, weight=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"shape \(k, d\)"):
        replace_senses(model, 5, torch.zeros(3, 32))


def test_edit_rule_moves_the_score_to_the_new_target():
    torch.manual_seed(0)
    senses, old, new = torch.randn(4, 16), torch.randn(16), torch.randn(16)
    edited = edit_senses(senses, old, new)
    c = senses @ old / old.dot(old)
    assert torch.allclose(
        edited @ new, senses @ new - c * old.dot(new) + c * old.dot(old), atol=1e-5
    )
    orthogonal = torch.linalg.qr(torch.stack([old, new, torch.randn(16)]).T).Q[:, 2]
    assert torch.allclose(edited @ orthogonal, senses @ orthogonal, atol=1e-5)


def test_fit_sense_weights_finds_the_unbiased_weight():
    gap = torch.tensor([[2.0, 2.0], [1.0, -1.0]])       # (professions, prompts)
    contribution = torch.tensor([[2.0, 2.0], [0.0, 0.0]])
    weights = fit_sense_weights(gap, contribution)
    assert weights[0] == 0.0 and weights.shape == (2,)


def test_topic_weights_and_steering():
    model = tiny_backpack()
    # low ids score highest
    scores = -torch.arange(64 * 4, dtype=torch.float32).view(64, 4)
    for strength, top in [(0, 1.0), (1, 1.5), (3, 3.3)]:
        deltas = topic_weights(scores, strength)
        assert deltas.max() == pytest.approx(top) and deltas.min() == 1.0
    off = TopicSteering(model, topic_weights(scores, 0), anneal=True)
    plain = logits(model)
    with intervene(model, off):
        assert torch.equal(logits(model), plain)
    on = TopicSteering(model, topic_weights(scores, 3), anneal=True)
    with intervene(model, on):
        assert not torch.allclose(logits(model), plain)
        model.generate(IDX[:, :3], 4, generator=torch.Generator().manual_seed(0))


def test_annealing_follows_the_authors_rule():
    model = tiny_backpack()
    torch.manual_seed(1)
    deltas = 1 + 2 * torch.rand(64, 4)                                # (V, k) in [1, 3)
    steering = TopicSteering(model, deltas)
    with torch.no_grad():
        senses = model.sense_vectors(IDX)                            # (b, k, n, d)
        used = steering.weights(IDX, senses)                         # (b, k, n)
    E = model.word_embeddings.detach()
    b, k, n, _ = senses.shape
    f = float(deltas.max()) / 7.5                                     # max delta / 7.5
    for row in range(b):
        for sense in range(k):
            for j in range(n):
                a = sum(max(float(E[IDX[row, i]] @ senses[row, sense, j]), 0.0)
                        for i in range(n))
                beta = torch.sigmoid(torch.tensor(6 - f * a)) * (1 + j / 100)
                expected = beta * deltas[IDX[row, j], sense] + 1 - beta
                assert float(used[row, sense, j]) == pytest.approx(
                    float(expected), rel=1e-4
                )
    assert torch.equal(TopicSteering(model, deltas, anneal=False).weights(IDX, senses),
                       deltas[IDX].transpose(1, 2))


def test_anneal_scale_must_be_positive():
    model = tiny_backpack()
    with pytest.raises(ValueError, match="anneal_scale must be > 0"):
        TopicSteering(model, torch.ones(64, 4), anneal_scale=0.0)


def test_sense_peaks_and_topic_scores_against_the_formula():
    """s = b . (E C) / max(E C), from every sense of every token in float64, at once."""
    from backpack.interventions import sense_peaks, topic_scores

    model = tiny_backpack()
    E = model.word_embeddings.detach().double()                           # (V, d)
    with torch.no_grad():
        senses = model.double().sense_network(E[None])[0]                 # (k, V, d)
    model.float()
    logits = senses @ E.T                                                 # (k, V, V)
    peaks = logits.amax(-1).T                                             # (V, k)
    bags = [[3, 5], [7]]
    # (t, V, k)
    expected = torch.stack([logits[..., bag].sum(-1).T / peaks for bag in bags])
    done = []
    got_peaks = sense_peaks(model, chunk=10, progress=lambda i, n: done.append((i, n)))
    assert got_peaks.shape == (64, 4) and done[-1] == (64, 64) and len(done) == 7
    torch.testing.assert_close(got_peaks.double(), peaks, rtol=1e-5, atol=1e-5)
    for given in (None, got_peaks):
        scores = topic_scores(model, bags, peaks=given, chunk=7)
        torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"peaks must be \(vocab, k\) = \(64, 4\)"):
        topic_scores(model, bags, peaks=got_peaks[:10])


def test_row_maxima_equal_the_maximum_of_the_whole_product():
    """Blocks of E (a short last one included) give the maxima of rows @ E.T."""
    from backpack.interventions import row_maxima

    rows, E = (
        torch.randn(37, 8, dtype=torch.float64),
        torch.randn(1000, 8, dtype=torch.float64),
    )
    expected = (rows @ E.T).amax(-1)
    for block in (64, 300, 1000, 4096):
        torch.testing.assert_close(row_maxima(rows.float(), E.float(), block).double(),
                                   expected, rtol=1e-5, atol=1e-5)
