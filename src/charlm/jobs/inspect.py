"""Looking inside a trained model: the `charlm-inspect` command.

Reads a text (`text=` or `text_file=`), scores and traces it with the model (`charlm.insight`) and writes one
self-contained HTML page, printing only its path. Every check (checkpoint, options, the text's characters,
the unit asked for) happens before anything is written or printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from charlm.corpus import read_text
from charlm.errors import CharLMError
from charlm.insight.page import page
from charlm.loading import LoadedModel, default_device, load_model
from charlm.options import InspectOptions, check_options
from charlm.vocab import Vocab


def read_input(cfg: DictConfig) -> tuple[str, str]:
    """The text and a name for it: `text=` verbatim, or the whole of `text_file=`."""
    if cfg.text is not None and cfg.text_file:
        raise CharLMError("give text= or text_file=, not both")
    if cfg.text_file:
        path = Path(str(cfg.text_file)).expanduser()
        if not path.is_file():
            raise CharLMError(f"text_file={str(cfg.text_file)!r} does not exist; give a UTF-8 text file")
        return read_text(path), path.stem
    if cfg.text is None:
        raise CharLMError('nothing to look at: pass text="..." or text_file=PATH')
    return str(cfg.text), "text"


def known_text(text: str, vocab: Vocab, unknown: str, max_chars: int) -> tuple[str, int]:
    """The text in the model's vocabulary: unknown characters refused (error) or left out and counted (skip)."""
    if not text:
        raise CharLMError("the text is empty; give at least 2 characters")
    missing = sorted(set(text) - set(vocab.chars))
    if missing and unknown == "error":
        count = sum(text.count(ch) for ch in missing)
        raise CharLMError(
            f"characters not in the model's vocabulary: {''.join(missing)!r} ({count:,} occurrences); "
            "pass unknown=skip to leave them out"
        )
    kept = "".join(ch for ch in text if ch not in missing) if missing else text
    if len(kept) < 2:
        raise CharLMError(f"the text has {len(kept)} character(s) the model knows; at least 2 are needed")
    if len(kept) > max_chars:
        raise CharLMError(f"the text has {len(kept):,} characters, more than max_chars={max_chars:,}")
    return kept, len(text) - len(kept)


def run_dir(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def window_size(model: LoadedModel, ckpt: Path) -> int:
    """The window length charlm-evaluate reads a text with: the model's block_size, else its run's, else 256."""
    own = model.module.hparams.model.get("block_size")
    if own:
        return int(own)
    saved = run_dir(ckpt) / ".hydra" / "config.yaml"
    try:
        return int(OmegaConf.load(saved).data.block_size)
    except (OSError, AttributeError, ValueError, TypeError):
        return 256


def run(cfg: DictConfig) -> dict[str, Any]:
    """Write the page and print its path (the only line on stdout)."""
    check_options(cfg, InspectOptions, "inspect")
    text, name = read_input(cfg)
    device = default_device(cfg.get("device"))
    model = load_model(str(cfg.ckpt_path), cfg.which, device)
    ckpt = Path(model.path)
    if not model.module.architecture.continues_text:
        raise CharLMError(
            f"{ckpt} is a {type(model.net).__name__} model: the surprise, neuron and attention views are for language "
            "models; charlm-generate input=... attention_png=PATH draws a seq2seq model's alignment"
        )
    text, skipped = known_text(text, model.vocab, cfg.unknown, cfg.max_chars)
    block_size = cfg.block_size or window_size(model, ckpt)
    reproduce = f"charlm-evaluate ckpt_path={ckpt} text_file=FILE context={cfg.context}"
    if cfg.context == "windows" and cfg.block_size is None:
        notes = {"checkpoint": str(ckpt), "same bpc": reproduce}
    else:
        notes = {"checkpoint": str(ckpt), "windows": str(block_size)}
    if skipped:
        notes["left out"] = f"{skipped:,} characters outside the vocabulary (unknown=skip)"
    html = page(
        model.net,
        model.vocab,
        text,
        title=f"charlm-inspect: {name}",
        context=cfg.context,
        block_size=block_size,
        stride=cfg.stride,
        unit=None if cfg.unit is None else str(cfg.unit),
        top_units=cfg.top_units,
        attention_start=cfg.attention_start,
        attention_length=cfg.attention_length,
        notes=notes,
        device=device,
    )
    out = Path(str(cfg.output)).expanduser() if cfg.output else run_dir(ckpt) / "inspect" / f"{name}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    print(out, flush=True)
    return {"path": str(out), "skipped": skipped, "chars": len(text)}
