"""Generating text from a checkpoint: loading a model safely and the `generate.py` command."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.utils import get_method
from omegaconf import DictConfig

from charlm.corpus import read_text
from charlm.errors import CharLMError
from charlm.loading import default_device, load_model
from charlm.options import GenerateOptions, check_options
from charlm.sampling import SamplingOptions, encode_prompt, generate


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
    check_options(cfg, GenerateOptions, "generate")
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
