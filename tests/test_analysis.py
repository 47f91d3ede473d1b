"""backpack.analysis (chapter 8) on tiny random models: answers computed by hand."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from backpack.analysis import (
    BenchmarkFormatError,
    WordNotInVocabulary,
    contextualization_summary,
    contributions,
    coverage,
    explorer_data,
    explorer_html,
    frequent_words,
    nearest_neighbours,
    read_explorer_data,
    read_word_pairs,
    same_word,
    sense_overview,
    sense_projections,
    sense_roles,
    sense_table,
    similarity_scores,
    specialisations,
    spearman,
    style_sense_table,
    token_properties,
    token_text,
    top_contributions,
    top_projected,
    vocabulary_senses,
    word_id,
    word_pieces,
    word_vectors,
    write_explorer_data,
)
from backpack.model import BackpackConfig, BackpackLM, TransformerLM

WORDS = [
    "<|endoftext|>",
    " the",
    " nurse",
    " she",
    " he",
    " ran",
    " London",
    "ing",
    ".",
    ",",
    " night",
    " her",
    " his",
    "ale",
    " Mary",
    " walked",
]


def tiny_tokenizer() -> Tokenizer:
    """A tokenizer over WORDS plus single letters, byte-level pre-tokenized, so
    that ' nurse' is one token and ' nightingale' splits into ' night', 'ing', 'ale'."""
    pieces = WORDS + [chr(c) for c in range(ord("a"), ord("z") + 1)] + [" "]
    vocab = {}
    for piece in pieces:
        key = piece.replace(" ", "Ġ")
        vocab.setdefault(key, len(vocab))
    # greedy longest match (WordPiece, no continuation prefix) over byte-level pieces
    tokenizer = Tokenizer(
        models.WordPiece(
            vocab,
            unk_token="<|endoftext|>",
            continuing_subword_prefix="",
            max_input_chars_per_word=100,
        )
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=True
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer) -> BackpackLM:
    torch.manual_seed(0)
    config = BackpackConfig(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        num_senses=4,
    )
    return BackpackLM(config).eval()


def test_tokenizer_fixture(tokenizer):
    assert word_pieces(tokenizer, "nurse") == [tokenizer.token_to_id("Ġnurse")]
    assert [tokenizer.decode([t]) for t in word_pieces(tokenizer, "nightingale")] == [
        " night",
        "ing",
        "ale",
    ]


def test_sense_projections_by_hand(model, tokenizer):
    token = word_id(tokenizer, "nurse")
    with torch.no_grad():
        senses = model.sense_network(
            model.word_embeddings[torch.tensor([token])]
        )  # (k, 1, d)
        expected = senses[:, 0] @ model.word_embeddings.T  # (k, V)
    got = sense_projections(model, token)
    assert got.shape == (4, model.config.vocab_size)
    torch.testing.assert_close(got, expected)
    # one-token prompt: alpha = 1 for every sense, the logits are the projections' sum
    with torch.no_grad():
        logits = model(torch.tensor([[token]])).logits[0, 0]
    torch.testing.assert_close(got.sum(0), logits, atol=1e-5, rtol=1e-5)


def test_sense_projections_follow_sense_edits(model, tokenizer):
    token = word_id(tokenizer, "nurse")
    model.sense_edits.append(lambda idx, senses: senses * 2)
    try:
        doubled = sense_projections(model, token)
    finally:
        model.sense_edits.clear()
    torch.testing.assert_close(doubled, 2 * sense_projections(model, token))


def test_sense_projections_errors(model, tokenizer):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sense_projections(model, model.config.vocab_size)
    with pytest.raises(ValueError, match="must be an integer"):
        sense_projections(model, 1.5)
    transformer = TransformerLM(model.config)
    with pytest.raises(TypeError, match="only a Backpack"):
        sense_projections(transformer, 1)


def test_sense_table_matches_topk(model, tokenizer):
    table = sense_table(model, tokenizer, "nurse", top=3, bottom=2)
    assert list(table.columns) == ["top 1", "top 2", "top 3", "bottom 1", "bottom 2"]
    assert table.index.names == ["piece", "sense"] and len(table) == 4
    scores = sense_projections(model, word_id(tokenizer, "nurse"))
    for sense in range(4):
        best = scores[sense].topk(3).indices.tolist()
        worst = scores[sense].topk(2, largest=False).indices.tolist()
        row = table.loc[("␣nurse", sense)].tolist()
        assert row == [token_text(tokenizer, t) for t in best + worst]


def test_sense_table_split_words(model, tokenizer):
    table = sense_table(model, tokenizer, "nightingale", top=2, senses=[0, 3])
    assert table.index.tolist() == [
        ("␣night", 0),
        ("␣night", 3),
        ("ing", 0),
        ("ing", 3),
        ("ale", 0),
        ("ale", 3),
    ]
    first = sense_table(model, tokenizer, "nightingale", top=2, pieces="first")
    assert first.index.get_level_values("piece").unique().tolist() == ["␣night"]
    with pytest.raises(WordNotInVocabulary, match="splits it into"):
        sense_table(model, tokenizer, "nightingale", pieces="error")


def test_sense_table_errors(model, tokenizer):
    with pytest.raises(IndexError, match="sense index 4 is out of range.*0..3"):
        sense_table(model, tokenizer, "nurse", senses=[0, 4])
    with pytest.raises(WordNotInVocabulary, match="non-empty word"):
        sense_table(model, tokenizer, "  ")
    with pytest.raises(ValueError, match="at least one word"):
        sense_table(model, tokenizer, "nurse", top=0, bottom=0)
    with pytest.raises(WordNotInVocabulary, match="not in the vocabulary as one token"):
        word_id(tokenizer, "nightingale")


def test_style_and_overview(model, tokenizer):
    html = style_sense_table(
        sense_table(model, tokenizer, "nurse"), highlight="nurse"
    ).to_html()
    assert "sense-table" in html
    overview = sense_overview(model, tokenizer, ["nurse", "she"], top=2)
    assert overview.shape == (4, 2)
    assert overview.loc[0, "nurse"] == " ".join(
        sense_table(model, tokenizer, "nurse", top=2).iloc[0]
    )


def logits_of(model, idx, position):
    with torch.no_grad():
        return model(idx[None]).logits[0, position]


@pytest.mark.parametrize("position", [-1, 2, 0])
def test_contributions_sum_to_the_logit(model, tokenizer, position):
    idx = torch.tensor(tokenizer.encode(" the nurse ran .").ids)
    she, he = word_id(tokenizer, "she"), word_id(tokenizer, "he")
    to_she = contributions(model, idx, she, position)
    to_he = contributions(model, idx[None], he, position)
    assert to_she.shape == (4, len(idx))
    logits = logits_of(model, idx, position)
    torch.testing.assert_close(to_she.sum(), logits[she], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        (to_she - to_he).sum(), logits[she] - logits[he], atol=1e-5, rtol=1e-5
    )
    # causality: nothing comes from positions after the one predicted
    i = position % len(idx)
    assert (to_she[:, i + 1 :] == 0).all()


def test_contributions_by_hand(model, tokenizer):
    """Entry [l, j] is alpha_l[i, j] * (E[y] . C(x_j)_l), computed from the parts."""
    idx = torch.tensor(tokenizer.encode(" the nurse").ids)
    y = word_id(tokenizer, "she")
    with torch.no_grad():
        out = model(idx[None], return_senses=True)
        expected = out.contextualization[0, :, -1, :] * (
            out.senses[0] @ model.word_embeddings[y]
        )
    torch.testing.assert_close(contributions(model, idx, y), expected)


def test_contributions_divide_by_senses(tokenizer):
    torch.manual_seed(1)
    config = BackpackConfig(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        num_senses=4,
        divide_by_senses=True,
    )
    model = BackpackLM(config).eval()
    idx = torch.tensor(tokenizer.encode(" the nurse").ids)
    y = word_id(tokenizer, "she")
    torch.testing.assert_close(
        contributions(model, idx, y).sum(),
        logits_of(model, idx, -1)[y],
        atol=1e-5,
        rtol=1e-5,
    )


def test_contributions_errors(model, tokenizer):
    too_long = torch.zeros(model.config.n_positions + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="more than the context of 16"):
        contributions(model, too_long, 1)
    idx = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="target id .* outside the vocabulary"):
        contributions(model, idx, model.config.vocab_size)
    with pytest.raises(ValueError, match="target id must be an integer"):
        contributions(model, idx, None)
    with pytest.raises(IndexError, match="position 3 is outside a prompt of 3"):
        contributions(model, idx, 1, position=3)
    with pytest.raises(ValueError, match="one prompt"):
        contributions(model, torch.zeros(2, 3, dtype=torch.long), 1)


def test_top_contributions():
    terms = torch.tensor([[0.1, -3.0], [2.0, 0.0]])
    table = top_contributions(terms, ["a", "b"], count=2)
    assert table.to_dict("records") == [
        {"source": "b", "position": 1, "sense": 0, "contribution": -3.0},
        {"source": "a", "position": 0, "sense": 1, "contribution": 2.0},
    ]
    with pytest.raises(ValueError, match="token labels"):
        top_contributions(terms, ["a"])


def test_contextualization_summary_by_hand():
    uniform = torch.tril(torch.ones(3, 3)) / torch.arange(1, 4)[:, None]  # (n, n)
    diagonal = torch.eye(3)
    alpha = torch.stack([uniform, diagonal])  # (k=2, n, n)
    summary = contextualization_summary(alpha)
    assert summary.loc[0, "relative entropy"] == pytest.approx(1.0)
    assert summary.loc[1, "relative entropy"] == pytest.approx(0.0, abs=1e-6)
    assert (
        summary.loc[1, "on itself"] == 1.0 and summary.loc[1, "on first token"] == 0.0
    )
    # uniform rows 1, 2: 1/2 and 1/3 on itself and on the first token
    assert summary.loc[0, "on itself"] == pytest.approx((1 / 2 + 1 / 3) / 2, abs=1e-3)


def test_token_properties_and_same_word(tokenizer):
    props = token_properties(tokenizer, tokenizer.get_vocab_size())
    at = {
        tokenizer.decode([i]): props.iloc[i] for i in range(tokenizer.get_vocab_size())
    }
    assert at["ing"]["continuation"] and not at[" nurse"]["continuation"]
    assert at[" London"]["capitalised"] and not at[" the"]["capitalised"]
    assert at["."]["punctuation"] and not at["ing"]["punctuation"]
    assert at[" the"]["function word"] and at[" she"]["gendered pronoun"]
    assert not at[" nurse"]["gendered pronoun"]
    assert same_word(" walk", " walked") and same_word(" The", "the")
    assert not same_word(" walk", " walkingly") and not same_word(" a", " an")


def test_nearest_neighbours_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, -0.2]])
    assert nearest_neighbours(embeddings, torch.tensor([0, 2]), 2).tolist() == [
        [1, 2],
        [1, 0],
    ]


def test_vocabulary_senses_and_top_projected(model):
    ids = torch.tensor([3, 5])
    senses = vocabulary_senses(model, ids, batch=1)  # (k, 2, d)
    for column, token in enumerate(ids.tolist()):
        torch.testing.assert_close(
            senses[:, column] @ model.word_embeddings.T, sense_projections(model, token)
        )
    best = top_projected(model, ids, top=3, batch=1)  # (2, k, 3)
    assert best.shape == (2, 4, 3)
    assert (
        best[1, 2].tolist() == sense_projections(model, 5)[2].topk(3).indices.tolist()
    )


def test_sense_roles_shares(model, tokenizer):
    ids = torch.tensor(word_pieces(tokenizer, "nurse") + word_pieces(tokenizer, "ran"))
    roles = sense_roles(model, tokenizer, ids, top=4, neighbours=3)
    assert roles.shape == (4, 7) and ((roles >= 0) & (roles <= 1)).all().all()
    best = top_projected(model, ids, top=4)  # (2, k, 4)
    props = token_properties(tokenizer, model.config.vocab_size)
    continuation = props["continuation"].to_numpy()[best.numpy()].mean(axis=(0, 2))
    np.testing.assert_allclose(
        roles["continuation"].to_numpy(), continuation, rtol=1e-6
    )
    found = specialisations(roles)
    assert list(found.index) == list(roles.columns)


def test_frequent_words(tokenizer):
    the, nurse, ing = (tokenizer.token_to_id(t) for t in ("Ġthe", "Ġnurse", "ing"))
    tokens = np.array([nurse, the, the, ing, ing, ing, nurse, the], dtype=np.uint16)
    assert frequent_words(
        tokens, tokenizer, 2, tokenizer.get_vocab_size()
    ).tolist() == [the, nurse]


def test_read_word_pairs_and_errors(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("Cat\tdog\t7.5\nsea  ocean 9\n\n")
    pairs = read_word_pairs(good)
    assert pairs.to_dict("records") == [
        {"word1": "cat", "word2": "dog", "score": 7.5},
        {"word1": "sea", "word2": "ocean", "score": 9.0},
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("cat,dog,7.5\n")
    with pytest.raises(
        BenchmarkFormatError, match="bad.csv, line 1: expected 'word1 word2"
    ):
        read_word_pairs(bad)
    header = tmp_path / "header.txt"
    header.write_text("word1 word2 score\n")
    with pytest.raises(BenchmarkFormatError, match="line 1"):
        read_word_pairs(header)
    with pytest.raises(FileNotFoundError):
        read_word_pairs(tmp_path / "missing.txt")


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # d = rank differences (0, 0, 1, -1): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2, 3], [1, 2])


def test_word_vectors_mean_and_first():
    table = torch.arange(12.0).view(1, 6, 2)  # (k=1, V=6, d=2)
    got = word_vectors(table, [[1], [2, 4]])
    torch.testing.assert_close(got, torch.tensor([[[2.0, 3.0], [6.0, 7.0]]]))
    first = word_vectors(table[0], [[1], [2, 4]], mode="first")
    torch.testing.assert_close(first, torch.tensor([[2.0, 3.0], [4.0, 5.0]]))
    with pytest.raises(ValueError, match="mode"):
        word_vectors(table, [[1]], mode="last")


def test_similarity_scores_by_hand(tokenizer):
    """Embeddings built so that the cosines rank the pairs like the human scores."""
    names = ["nurse", "she", "he", "ran", "night", "walked"]
    ids = [word_id(tokenizer, w) for w in names]
    table = torch.zeros(tokenizer.get_vocab_size(), 2)
    angles = [0.0, 0.1, 0.5, 0.9, 1.4, 3.0]
    for token, angle in zip(ids, angles, strict=True):
        table[token] = torch.tensor([np.cos(angle), np.sin(angle)])
    pairs = pd.DataFrame(
        {"word1": ["nurse"] * 5, "word2": names[1:], "score": [9.0, 7.0, 5.0, 3.0, 1.0]}
    )
    scores = similarity_scores(
        {"emb": table, "senses": table.expand(3, -1, -1)}, tokenizer, pairs
    )
    assert scores["emb"] == pytest.approx(1.0)
    assert scores["senses Sim_0"] == pytest.approx(1.0)
    assert scores["senses Sim_min"] == pytest.approx(1.0)
    assert len(scores) == 1 + 3 + 1
    assert coverage(tokenizer, pairs) == 1.0
    split = pd.DataFrame(
        {
            "word1": ["nightingale", "nurse", "she"],
            "word2": ["nurse", "he", "ran"],
            "score": [1.0, 2.0, 3.0],
        }
    )
    assert coverage(tokenizer, split) == pytest.approx(2 / 3)


def test_sim_min_takes_the_lowest_sense(tokenizer):
    """Sim_min is the minimum over senses of the cosines (paper eq. 14), not the max.

    Sense 0's cosines fall with the human scores; sense 1's are higher for every pair
    but rise as the scores fall, so the minimum is sense 0 for every pair (rho = +1)
    and the maximum is sense 1 (rho = -1)."""
    names = ["nurse", "she", "he", "ran", "night", "walked"]
    ids = [word_id(tokenizer, w) for w in names]
    senses = torch.zeros(2, tokenizer.get_vocab_size(), 2)
    by_sense = [[0.0, 0.1, 0.5, 0.9, 1.4, 3.0], [0.0, 0.05, 0.04, 0.03, 0.02, 0.01]]
    for sense, angles in enumerate(by_sense):
        for token, angle in zip(ids, angles, strict=True):
            senses[sense, token] = torch.tensor([np.cos(angle), np.sin(angle)])
    human = [9.0, 7.0, 5.0, 3.0, 1.0]
    pairs = pd.DataFrame({"word1": ["nurse"] * 5, "word2": names[1:], "score": human})
    cosines = torch.stack(
        [torch.cos(torch.tensor(angles[1:])) for angles in by_sense]
    )  # (2, pairs)
    assert (cosines[0] < cosines[1]).all()  # the senses differ: min != max per pair
    scores = similarity_scores({"senses": senses}, tokenizer, pairs)
    assert scores["senses Sim_0"] == pytest.approx(1.0)
    assert scores["senses Sim_1"] == pytest.approx(-1.0)
    assert spearman(cosines.max(0).values, human) == pytest.approx(-1.0)
    assert scores["senses Sim_min"] == pytest.approx(1.0)
    assert scores["senses Sim_min"] == pytest.approx(
        spearman(cosines.min(0).values, human)
    )


def test_explorer_data_round_trip(model, tokenizer, tmp_path):
    ids = torch.tensor([word_id(tokenizer, "nurse"), word_id(tokenizer, "she")])
    data = explorer_data(model, tokenizer, ids, top=3)
    path = tmp_path / "data.js"
    size = write_explorer_data(data, path)
    assert size == path.stat().st_size
    assert path.read_text().startswith("// Written by")
    back = read_explorer_data(path)
    assert back == data
    raw = np.frombuffer(base64.b64decode(back["top_ids"]), dtype="<u2").reshape(2, 4, 3)
    assert raw[0].tolist() == top_projected(model, ids, 3)[0].tolist()


def test_explorer_html_is_self_contained():
    html = explorer_html("data.js", word='a"b')
    assert '<script src="data.js"></script>' in html
    assert "a&quot;b" in html
    assert "http" not in html and "fetch(" not in html
