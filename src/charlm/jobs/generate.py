"""Generating text from a checkpoint: loading a model safely and the `generate.py` command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig

from charlm.corpus import read_text
from charlm.errors import CharLMError
from charlm.loading import default_device, load_model
from charlm.sampling import SamplingOptions, encode_prompt, generate

# option -> (check, what is valid); null is valid where the check says so
OPTIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_new_tokens": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "num_samples": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "temperature": (lambda v: is_number(v) and v > 0, "a number > 0 (greedy=true for argmax decoding)"),
    "top_k": (lambda v: v is None or is_int(v) and v >= 1, "an integer >= 1, or null for no limit"),
    "top_p": (lambda v: v is None or is_number(v) and 0 < v <= 1, "a number in (0, 1], or null for no limit"),
    "greedy": (lambda v: isinstance(v, bool), "true or false"),
    "use_cache": (lambda v: isinstance(v, bool), "true or false"),
    "seed": (lambda v: is_int(v), "an integer"),
    "beam_size": (lambda v: v is None or is_int(v) and v >= 1, "an integer >= 1, or null for sampling"),
    "which": (lambda v: v in ("best", "last"), "best or last"),
}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_options(cfg: DictConfig) -> None:
    for key, (valid, what) in OPTIONS.items():
        if key in cfg and not valid(cfg[key]):
            raise CharLMError(f"{key}={cfg[key]!r} is not valid: expected {what}")


def read_prompt(cfg: DictConfig) -> str:
    """The text to continue: `prompt=` as given, or the whole of `prompt_file=` (`-` = standard input)."""
    prompt, prompt_file = cfg.get("prompt") or "", cfg.get("prompt_file")
    if prompt_file is None:
        return str(prompt)
    if prompt:
        raise CharLMError("give prompt= or prompt_file=, not both")
    if prompt_file == "-":
        return sys.stdin.read()
    path = Path(str(prompt_file)).expanduser()
    if not path.is_file():
        raise CharLMError(f"prompt_file={str(prompt_file)!r} does not exist (give a text file, or - for stdin)")
    return read_text(path)


def run(cfg: DictConfig) -> list[str]:
    """The `generate.py` command: check everything, then stream the first sample and print the others.

    Nothing reaches stdout before the checkpoint, the options and the prompt's characters are checked,
    so a mistake leaves stdout empty.
    """
    if not cfg.get("ckpt_path"):
        raise CharLMError("ckpt_path is required: a .ckpt file or a run directory (ckpt_path=outputs/runs/...)")
    check_options(cfg)
    device = default_device(cfg.get("device"))
    model = load_model(cfg.ckpt_path, cfg.get("which", "best"), device)
    decoder = model.module.architecture.decoder
    if decoder is not None:
        if cfg.get("prompt_file") is not None:
            raise CharLMError(
                "prompt_file= continues text with a language model; a seq2seq checkpoint takes input= or input_file="
            )
        return get_method(decoder)(cfg, model.net, model.vocab)
    if cfg.get("attention_png"):
        raise CharLMError("attention_png= draws a seq2seq model's alignment; charlm-inspect shows a language model's")
    if cfg.get("input") is not None or cfg.get("input_file"):
        raise CharLMError("input= and input_file= are for seq2seq checkpoints; a language model continues prompt=")
    prompt = read_prompt(cfg)
    encode_prompt(model.vocab, prompt)  # unknown characters are refused here, before anything is printed
    opts = SamplingOptions(cfg.temperature, cfg.top_k, cfg.top_p, bool(cfg.greedy))
    texts = []
    for k in range(int(cfg.num_samples)):
        if k:
            print("\n" + "-" * 40, flush=True)
        print(prompt, end="", flush=True)
        out = generate(
            model.net,
            model.vocab,
            prompt,
            max_new_tokens=int(cfg.max_new_tokens),
            temperature=opts.temperature,
            top_k=opts.top_k,
            top_p=opts.top_p,
            greedy=opts.greedy,
            seed=int(cfg.seed) + k,
            use_cache=bool(cfg.use_cache),
            device=device,
            on_text=lambda ch: print(ch, end="", flush=True),
        )
        texts.extend(out)
    print(flush=True)
    return texts
