"""The one implementation of text generation, used by the CLI, the Python API and the
TensorBoard sample callback.

Each new character costs constant work: recurrent nets carry their hidden state, the
transformer its key/value cache. A transformer only sees `block_size` characters; when the
text outgrows that, the context window jumps forward so that it keeps the last
block_size // 2 characters, and the cache is recomputed over them once. The cache then
grows again until the window is full. `use_cache=False` re-runs the same window from
scratch for every character: it gives the same logits (the tests hold the two to float
tolerance) and serves as the baseline for benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from charlm.errors import CharLMError
from charlm.models.base import CharNet
from charlm.options import SamplingRules, check_rules
from charlm.vocab import Vocab

START_CHAR = "\n"  # what an empty prompt starts from (the vocabulary's first character if it lacks "\n")


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick each next character from the model's logits (checked by the rules `charlm-generate` uses)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        check_rules(asdict(self), SamplingRules)


def filter_logits(logits: torch.Tensor, opts: SamplingOptions) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering of (B, V) logits."""
    if opts.temperature != 1:  # dividing by 1 changes nothing and costs an op per character
        logits = logits / opts.temperature
    if opts.top_k is not None and opts.top_k < logits.size(-1):
        kth = torch.topk(logits, opts.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if opts.top_p is not None and opts.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > opts.top_p  # mass before this token already exceeds p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def pick_next(logits: torch.Tensor, opts: SamplingOptions, generators: list[torch.Generator]) -> torch.Tensor:
    """One id per row of (B, V) logits; row b draws from its own generator."""
    if opts.greedy:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float(), opts).softmax(dim=-1).cpu()  # (B, V): CPU generators draw on the CPU
    picks = [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)]  # (1,) each
    return (picks[0] if len(picks) == 1 else torch.cat(picks)).to(logits.device)


def window_start(n: int, start: int, max_context: int | None) -> int:
    """Where the context begins once the text has n characters, given it began at `start`."""
    if max_context is None or n - start <= max_context:
        return start
    return n - max(1, max_context // 2)


@contextmanager
def eval_mode(net: torch.nn.Module) -> Iterator[None]:
    """The net in eval mode inside the block, and back in the mode it was in afterwards, even on an error."""
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def generate_ids(
    net: CharNet,
    prompt: torch.Tensor,
    max_new_tokens: int,
    opts: SamplingOptions = SamplingOptions(),
    seed: int = 0,
    use_cache: bool = True,
    on_step: Callable[[torch.Tensor], None] | None = None,
    on_logits: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Continue a (B, T0) prompt by `max_new_tokens` ids; returns (B, T0 + max_new_tokens).

    Row b samples with a generator seeded `seed + b`, so a row's text does not depend on how
    many rows are generated with it. `on_step` sees each new (B,) column as it is produced.

    The loop runs under `torch.inference_mode`: a cached step is a few dozen tiny ops, and
    skipping autograd's view and version bookkeeping on each is a sixth of its time. The ids
    returned are ordinary tensors again, usable anywhere.
    """
    if max_new_tokens < 0:
        raise CharLMError(f"max_new_tokens={max_new_tokens} must be >= 0")
    with torch.inference_mode():
        ids = sample_loop(net, prompt, max_new_tokens, opts, seed, use_cache, on_step, on_logits)
    return ids.clone() if ids.is_inference() else ids


def sample_loop(
    net: CharNet,
    prompt: torch.Tensor,
    max_new_tokens: int,
    opts: SamplingOptions,
    seed: int,
    use_cache: bool,
    on_step: Callable[[torch.Tensor], None] | None,
    on_logits: Callable[[torch.Tensor], None] | None,
) -> torch.Tensor:
    """`generate_ids`'s loop: (B, T0) prompt in, (B, T0 + max_new_tokens) ids out."""
    generators = [torch.Generator().manual_seed(seed + b) for b in range(prompt.size(0))]
    ids, n = prompt, prompt.size(1)
    start = window_start(n, 0, net.max_context)
    with eval_mode(net):
        logits, state = net(ids[:, start:], None)
        for _ in range(max_new_tokens):
            last = logits[:, -1, :]  # (B, V)
            if on_logits is not None:
                on_logits(last)
            nxt = pick_next(last, opts, generators)
            ids, n = torch.cat([ids, nxt[:, None]], dim=1), n + 1
            if on_step is not None:
                on_step(nxt)
            new_start = window_start(n, start, net.max_context)
            if not use_cache or new_start != start:
                logits, state = net(ids[:, new_start:], None)  # (re)read the whole window
            else:
                logits, state = net(ids[:, -1:], state)  # one new position
            start = new_start
    return ids


def encode_prompt(vocab: Vocab, prompt: str) -> torch.Tensor:
    if not prompt:
        prompt = START_CHAR if START_CHAR in vocab.chars else vocab.chars[0]
    return vocab.encode(prompt)


def generate(
    net: CharNet,
    vocab: Vocab,
    prompt: str = "",
    max_new_tokens: int = 500,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    seed: int = 0,
    use_cache: bool = True,
    device: str | torch.device | None = None,
    on_text: Callable[[str], None] | None = None,
) -> list[str]:
    """Texts that continue `prompt` (each includes the prompt), one per sample.

    An empty prompt starts from a newline. `on_text` receives the first sample's characters as
    they are produced, for streaming to a terminal. Generation runs on `device` (default: the
    net's own); a net moved there is moved back afterwards, even on an error.
    """
    opts = SamplingOptions(temperature, top_k, top_p, greedy)
    if num_samples < 1:
        raise CharLMError(f"num_samples={num_samples} must be >= 1")
    home = next(net.parameters()).device
    device = torch.device(device) if device is not None else home
    ids = encode_prompt(vocab, prompt).to(device).repeat(num_samples, 1)  # (B, T0)
    stream = None if on_text is None else (lambda col: on_text(vocab.chars[int(col[0])]))
    if device != home:
        net.to(device)
    try:
        out = generate_ids(net, ids, max_new_tokens, opts=opts, seed=seed, use_cache=use_cache, on_step=stream)
    finally:
        if device != home:
            net.to(home)
    return [vocab.decode(row) for row in out.cpu()]
