"""The small seeded models shared by the tests of chapter 10 (sums, generation,
bench)."""
import torch

from backpack.model import BackpackConfig, BackpackLM, TransformerLM

SMALL = dict(
    vocab_size=97, n_positions=48, n_embd=48, n_layer=2, n_head=3, num_senses=4
)


def make(kind: str = "backpack", dtype=torch.float64, **overrides):
    """A seeded BackpackLM or TransformerLM of SMALL's size (fields overridden), in eval
    mode."""
    torch.manual_seed(0)
    cls = BackpackLM if kind == "backpack" else TransformerLM
    return cls(BackpackConfig(**{**SMALL, **overrides})).to(dtype).eval()
