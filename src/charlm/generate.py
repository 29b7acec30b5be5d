"""Generating text from a checkpoint: loading a model safely and the `generate.py` command."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from charlm import seq2seq_generate
from charlm.checkpoint import find_checkpoint, load_checkpoint
from charlm.errors import CharLMError
from charlm.module import CharLM, module_class
from charlm.sampling import generate


@dataclass
class LoadedModel:
    module: CharLM
    path: str

    @property
    def net(self):
        return self.module.net

    @property
    def vocab(self):
        return self.module.vocab


def load_model(ckpt_path: str, which: str = "best", device: str | torch.device = "cpu") -> LoadedModel:
    """A trained model in eval mode from a .ckpt file or a run directory; nothing else needed."""
    path = find_checkpoint(ckpt_path, which)
    ckpt = load_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    hp["compile"] = False
    try:
        module = module_class(hp.get("model", {}))(**hp)
        module.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError, KeyError) as err:
        raise CharLMError(f"{path} does not match any charlm model: {str(err).splitlines()[0][:200]}") from None
    return LoadedModel(module.to(device).eval(), str(path))


def default_device(device: str | None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def run(cfg: DictConfig) -> list[str]:
    """The `generate.py` command: stream the first sample, then print the others."""
    if not cfg.get("ckpt_path"):
        raise CharLMError("ckpt_path is required: a .ckpt file or a run directory (ckpt_path=outputs/runs/...)")
    device = default_device(cfg.get("device"))
    model = load_model(cfg.ckpt_path, cfg.get("which", "best"), device)
    if model.module.task == "seq2seq":
        return seq2seq_generate.run(cfg, model.net, model.vocab)
    if cfg.get("input") is not None or cfg.get("input_file"):
        raise CharLMError("input= and input_file= are for seq2seq checkpoints; a language model continues prompt=")
    texts = []
    for k in range(int(cfg.num_samples)):
        if k:
            print("\n" + "-" * 40, flush=True)
        prompt = cfg.prompt or ""
        print(prompt, end="", flush=True)
        out = generate(model.net, model.vocab, prompt, int(cfg.max_new_tokens), 1, cfg.temperature,
                       cfg.top_k, cfg.top_p, bool(cfg.greedy), int(cfg.seed) + k, bool(cfg.use_cache), device,
                       on_text=lambda ch: print(ch, end="", flush=True))
        texts.extend(out)
    print(flush=True)
    return texts


