"""Decoding source text with a trained seq2seq net: greedy or sampled (through the one
sampling implementation, `sampling.pick_next`) or beam search, each stopping at <eos>.

Used by validation (greedy, for CER and exact match) and by `generate.py input=...`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from charlm.errors import CharLMError
from charlm.sampling import SamplingOptions, eval_mode, pick_next
from charlm.seq2seq.data import BOS, EOS, PairVocab, collate, read_utf8
from charlm.seq2seq.model import Seq2Seq, select_state

GREEDY = SamplingOptions(greedy=True)
DECODE_BATCH = 64  # sources decoded together by `translate`


@torch.no_grad()
def decode_ids(
    net: Seq2Seq,
    src: torch.Tensor,
    src_len: torch.Tensor,
    max_new_tokens: int,
    opts: SamplingOptions = GREEDY,
    seed: int = 0,
    generators: list[torch.Generator] | None = None,
) -> list[list[int]]:
    """Free-running decoding of a (B, S) batch: each row's ids up to (not including) its <eos>.

    Row b samples with a generator seeded `seed + b` unless `generators` are given.
    """
    B = src.size(0)
    gens = generators or [torch.Generator().manual_seed(seed + b) for b in range(B)]
    prev = torch.full((B, 1), BOS, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    out: list[torch.Tensor] = []
    with eval_mode(net):
        memory, state = net.encode(src, src_len)
        for _ in range(max_new_tokens):
            logits, state = net.decode(prev, state, memory)  # (B, 1, V)
            nxt = pick_next(logits[:, -1], opts, gens)  # (B,)
            nxt = nxt.masked_fill(done, EOS)
            out.append(nxt)
            done |= nxt == EOS
            if done.all():
                break
            prev = nxt[:, None]
    ids = torch.stack(out, dim=1).tolist() if out else [[] for _ in range(B)]
    return [row[: row.index(EOS)] if EOS in row else row for row in ids]


@torch.no_grad()
def beam_search(net: Seq2Seq, src: torch.Tensor, max_new_tokens: int, beam_size: int) -> list[int]:
    """The highest-scoring (sum of log-probabilities) ids for one source (S,), without <eos>.

    Of the 2k best extensions at each step, an <eos> among the first k finishes a hypothesis
    and the best k others stay alive; the search stops once no live hypothesis can beat the
    best finished one. With beam_size=1 this is greedy decoding.
    """
    if beam_size < 1:
        raise CharLMError(f"beam_size={beam_size} must be >= 1")
    with eval_mode(net):
        return _beam_search(net, src, max_new_tokens, beam_size)


def _beam_search(net: Seq2Seq, src: torch.Tensor, max_new_tokens: int, beam_size: int) -> list[int]:
    """`beam_search` itself, run with the net in eval mode."""
    memory, state = net.encode(src[None, :], torch.tensor([src.size(0)]))
    alive = torch.full((1, 1), BOS, dtype=torch.long, device=src.device)  # (k, t): hypotheses so far
    scores = torch.zeros(1, device=src.device)  # (k,)
    finished: list[tuple[float, list[int]]] = []
    for _ in range(max_new_tokens):
        rows = torch.zeros(alive.size(0), dtype=torch.long, device=src.device)
        logits, state = net.decode(alive[:, -1:], state, memory.select(rows))  # (k, 1, V)
        total = scores[:, None] + logits[:, -1].float().log_softmax(dim=-1)  # (k, V)
        best, flat = total.flatten().topk(min(2 * beam_size, total.numel()))
        keep_rows, keep_ids, keep_scores = [], [], []
        for rank, (score, index) in enumerate(zip(best.tolist(), flat.tolist(), strict=True)):
            row, token = divmod(index, total.size(1))
            if token == EOS:
                if rank < beam_size:
                    finished.append((score, alive[row, 1:].tolist()))
            elif len(keep_rows) < beam_size:
                keep_rows.append(row)
                keep_ids.append(token)
                keep_scores.append(score)
        best_finished = max((s for s, _ in finished), default=float("-inf"))
        if not keep_rows or best_finished >= keep_scores[0]:
            break
        rows = torch.tensor(keep_rows, device=src.device)
        alive = torch.cat([alive[rows], torch.tensor(keep_ids, device=src.device)[:, None]], dim=1)
        scores = torch.tensor(keep_scores, device=src.device)
        state = select_state(state, rows)
    else:
        finished.extend((s, a[1:]) for s, a in zip(scores.tolist(), alive.tolist(), strict=True))
    return max(finished, key=lambda f: f[0])[1] if finished else []


def encode_sources(vocab: PairVocab, sources: list[str], where: list[str] | None = None) -> list[torch.Tensor]:
    """Each source as ids + <eos>; an unknown character is the language models' error, located if `where` says."""
    eos = torch.tensor([EOS])
    out = []
    for k, text in enumerate(sources):
        try:
            out.append(torch.cat([vocab.encode(text), eos]))
        except CharLMError as err:
            raise CharLMError(f"{where[k]}: {err}" if where else str(err)) from None
    return out


def translate(
    net: Seq2Seq,
    vocab: PairVocab,
    sources: list[str],
    max_new_tokens: int = 500,
    opts: SamplingOptions = GREEDY,
    seed: int = 0,
    beam_size: int | None = None,
    where: list[str] | None = None,
) -> list[str]:
    """Target text for each source: beam search when `beam_size` is set, else greedy or sampled per `opts`.

    Every source samples with its own generator seeded `seed`, so its output does not depend
    on the other sources decoded with it.
    """
    if max_new_tokens < 0:
        raise CharLMError(f"max_new_tokens={max_new_tokens} must be >= 0")
    device = next(net.parameters()).device
    ids = encode_sources(vocab, sources, where)
    if beam_size is not None:
        return [vocab.decode(beam_search(net, src.to(device), max_new_tokens, int(beam_size))) for src in ids]
    texts = []
    for first in range(0, len(ids), DECODE_BATCH):
        chunk = ids[first : first + DECODE_BATCH]
        batch = collate([(src, torch.zeros(0, dtype=torch.long)) for src in chunk])
        gens = [torch.Generator().manual_seed(seed) for _ in chunk]
        out = decode_ids(net, batch["x"].to(device), batch["x_len"], max_new_tokens, opts, generators=gens)
        texts.extend(vocab.decode(row) for row in out)
    return texts


def read_inputs(input_text: str | None, input_file: str | None) -> tuple[list[str], list[str] | None]:
    """Sources from `input=` or from the lines of `input_file=` (with their locations for errors)."""
    if input_file:
        path = Path(input_file).expanduser()
        if not path.is_file():
            raise CharLMError(f"input_file={input_file!r} does not exist")
        lines = read_utf8(path).splitlines()
        return lines, [f"{path} line {n}" for n in range(1, len(lines) + 1)]
    if input_text is None:
        raise CharLMError('a seq2seq checkpoint decodes a source: pass input="TEXT" or input_file=FILE')
    return [str(input_text)], None


def run(cfg: DictConfig, net: Seq2Seq, vocab: PairVocab) -> list[str]:
    """The `generate.py` command for seq2seq checkpoints: print each source's output, one per line."""
    if cfg.get("prompt"):
        raise CharLMError(
            "prompt= continues text with a language model; a seq2seq checkpoint takes input= or input_file="
        )
    sources, where = read_inputs(cfg.get("input"), cfg.get("input_file"))
    png = cfg.get("attention_png")
    if png and net.attention == "none":
        raise CharLMError("attention_png= needs a model with attention; this one was trained with model.attention=none")
    opts = SamplingOptions(cfg.temperature, cfg.top_k, cfg.top_p, bool(cfg.greedy))
    beam = cfg.get("beam_size")
    texts = []
    for k in range(int(cfg.num_samples)):
        out = translate(
            net, vocab, sources, int(cfg.max_new_tokens), opts=opts, seed=int(cfg.seed) + k, beam_size=beam, where=where
        )
        for text in out:
            print(text, flush=True)
        texts.extend(out)
    if png:
        write_alignments(net, vocab, sources, texts, Path(str(png)).expanduser())
    return texts


def write_alignments(net: Seq2Seq, vocab: PairVocab, sources: list[str], outputs: list[str], png: Path) -> list[Path]:
    """Each output's alignment heatmap (one row per output character) as a PNG: `png` itself for one output,
    `<stem>-<k><suffix>` for the k-th of several (sources in order, then samples)."""
    from charlm.insight.attention import alignment
    from charlm.insight.figures import alignment_figure, save_png

    paths = []
    for k, output in enumerate(outputs):
        source = sources[k % len(sources)]
        path = png if len(outputs) == 1 else png.with_name(f"{png.stem}-{k + 1}{png.suffix or '.png'}")
        if not output:
            print(f"attention_png: the output for {source!r} is empty, so {path} has no rows to draw", file=sys.stderr)
            continue
        paths.append(save_png(alignment_figure(alignment(net, vocab, source, output)), path))
    return paths
