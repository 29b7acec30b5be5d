"""Names people bring from the tools charlm's users know, and the charlm setting each one means.

nanoGPT (`python train.py config/train_shakespeare_char.py --compile=False`, `sample.py --start=...`),
char-rnn (`th train.lua -rnn_size 512`, `th sample.lua -primetext ... -length 2000 -sample 0`),
lightning-hydra-template (`debug=fdr test=true tags=[...]`) and older Lightning (`trainer.gpus=1`) name
the same knobs differently. An unknown key that is one of these names gets a one-line pointer to
charlm's own, instead of a near-miss spelling suggestion that would be wrong.
"""

from __future__ import annotations

# how alike a misspelt name and a valid one must be (difflib's ratio) to be suggested: `lrr` -> `lr` (0.8),
# but not `sample` -> `num_samples` (0.71), which means something else
CLOSE_ENOUGH = 0.75

NANOGPT, CHAR_RNN, LHT, LIGHTNING = "nanoGPT", "char-rnn", "lightning-hydra-template", "older Lightning"
GENERATE = "charlm-generate"

# key -> (the tool it comes from, charlm's equivalent), per command
TRAIN: dict[str, tuple[str, str]] = {
    "compile": (NANOGPT, "model.compile=true"),
    "dtype": (NANOGPT, "trainer.precision=bf16-mixed (or 16-mixed, 32-true)"),
    "init_from": (NANOGPT, "resume=RUN_DIR to continue a run"),
    "out_dir": (NANOGPT, "hydra.run.dir=DIR"),
    "max_iters": (NANOGPT, "trainer.max_steps=N"),
    "eval_interval": (NANOGPT, "trainer.val_check_interval=N"),
    "eval_iters": (NANOGPT, "trainer.limit_val_batches=N (the whole val split by default)"),
    "log_interval": (NANOGPT, "trainer.log_every_n_steps=N"),
    "learning_rate": (NANOGPT, "optimizer.lr=X"),
    "batch_size": (NANOGPT, "data.batch_size=N"),
    "block_size": (NANOGPT, "data.block_size=N"),
    "n_layer": (NANOGPT, "model.n_layer=N with model=transformer"),
    "n_head": (NANOGPT, "model.n_head=N with model=transformer"),
    "n_embd": (NANOGPT, "model.n_embd=N with model=transformer"),
    "dropout": (NANOGPT, "model.dropout=X"),
    "bias": (NANOGPT, "model.bias=true with model=transformer"),
    "weight_decay": (NANOGPT, "optimizer.weight_decay=X"),
    "beta1": (NANOGPT, "optimizer.betas=[B1,B2]"),
    "beta2": (NANOGPT, "optimizer.betas=[B1,B2]"),
    "grad_clip": (NANOGPT, "trainer.gradient_clip_val=X"),
    "gradient_accumulation_steps": (NANOGPT, "trainer.accumulate_grad_batches=N"),
    "warmup_iters": (NANOGPT, "scheduler.warmup_steps=N"),
    "lr_decay_iters": (NANOGPT, "scheduler.total_steps=N"),
    "decay_lr": (NANOGPT, "scheduler.decay=cosine|none"),
    "min_lr": (NANOGPT, "scheduler.min_lr_ratio=X (a fraction of optimizer.lr)"),
    "device": (NANOGPT, "trainer.accelerator=cpu|gpu"),
    "wandb_log": (NANOGPT, "logger=wandb"),
    "dataset": (NANOGPT, "data=NAME or data.path=FILE"),
    "eval_only": (NANOGPT, "train=false ckpt_path=RUN (or charlm-evaluate ckpt_path=RUN)"),
    "always_save_checkpoint": (NANOGPT, "callbacks.model_checkpoint.every_n_train_steps=N"),
    "start": (NANOGPT, f"{GENERATE} prompt=TEXT (or prompt_file=FILE)"),
    "num_samples": (NANOGPT, f"{GENERATE} num_samples=N"),
    "max_new_tokens": (
        NANOGPT,
        f"{GENERATE} max_new_tokens=N (training samples: callbacks.sample_text.max_new_tokens)",
    ),
    "temperature": (CHAR_RNN, f"{GENERATE} temperature=X (training samples: callbacks.sample_text.temperature)"),
    "top_k": (NANOGPT, f"{GENERATE} top_k=N"),
    "primetext": (CHAR_RNN, f"{GENERATE} prompt=TEXT"),
    "length": (CHAR_RNN, f"{GENERATE} max_new_tokens=N"),
    "sample": (CHAR_RNN, f"{GENERATE} greedy=true for sample=0 (sampling is the default)"),
    "gpuid": (CHAR_RNN, "trainer.accelerator=cpu for gpuid=-1, else trainer.accelerator=gpu trainer.devices=[ID]"),
    "rnn_size": (CHAR_RNN, "model.hidden_size=N"),
    "seq_length": (CHAR_RNN, "data.block_size=N"),
    "data_dir": (CHAR_RNN, "data.path=DIR_OR_FILE"),
    "checkpoint_dir": (CHAR_RNN, "hydra.run.dir=DIR"),
    "eval_val_every": (CHAR_RNN, "trainer.val_check_interval=N"),
    "print_every": (CHAR_RNN, "trainer.log_every_n_steps=N"),
    "train_frac": (CHAR_RNN, "data.val_fraction=X (train is what val and test leave)"),
    "val_frac": (CHAR_RNN, "data.val_fraction=X"),
    "learning_rate_decay": (CHAR_RNN, "scheduler.decay=cosine scheduler.min_lr_ratio=X"),
    "opencl": (CHAR_RNN, "trainer.accelerator=gpu"),
    "trainer.gpus": (LIGHTNING, "trainer.accelerator=gpu trainer.devices=N"),
    "trainer.resume_from_checkpoint": (LIGHTNING, "ckpt_path=FILE, or resume=RUN_DIR"),
    "trainer.progress_bar_refresh_rate": (LIGHTNING, "callbacks.progress_bar.refresh_rate=N"),
    "trainer.weights_summary": (LIGHTNING, "trainer.enable_model_summary=true|false"),
    "task_name": (LHT, "hydra.run.dir=outputs/NAME/... (runs are named by their overrides)"),
    "ckpt": (NANOGPT, "ckpt_path=PATH"),
}

# the sampling commands: char-rnn's sample.lua and nanoGPT's sample.py, and training's names
GENERATE_NAMES: dict[str, tuple[str, str]] = {
    "start": (NANOGPT, "prompt=TEXT (start=FILE:path is prompt_file=path)"),
    "primetext": (CHAR_RNN, "prompt=TEXT"),
    "length": (CHAR_RNN, "max_new_tokens=N"),
    "sample": (CHAR_RNN, "greedy=true for sample=0 (sampling is the default)"),
    "gpuid": (CHAR_RNN, "device=cpu for gpuid=-1, else device=cuda:ID"),
    "init_from": (NANOGPT, "ckpt_path=RUN_DIR_OR_FILE"),
    "out_dir": (NANOGPT, "ckpt_path=RUN_DIR"),
    "model": (CHAR_RNN, "ckpt_path=RUN_DIR_OR_FILE (the checkpoint knows its model)"),
    "ckpt": (NANOGPT, "ckpt_path=PATH"),
    "compile": (NANOGPT, "nothing: generation runs uncompiled, with a key/value cache (use_cache=true)"),
    "dtype": (NANOGPT, "nothing: generation runs in float32 on device=..."),
    "verbose": (CHAR_RNN, "nothing: the text goes to stdout, messages to stderr"),
    "debug": (LHT, "charlm-train debug=fdr|overfit|limit|profiler"),
    "tags": (LHT, "charlm-train tags=[...]"),
}

EVALUATE_NAMES: dict[str, tuple[str, str]] = {
    "init_from": (NANOGPT, "ckpt_path=RUN_DIR_OR_FILE"),
    "ckpt": (NANOGPT, "ckpt_path=PATH"),
    "eval_iters": (NANOGPT, "nothing: the whole split is scored (text_file= for another text)"),
    "gpuid": (CHAR_RNN, "device=cpu for gpuid=-1, else device=cuda:ID"),
    "test": (LHT, "split=test (or charlm-train test=true)"),
    "train": (LHT, "nothing: charlm-evaluate never trains (charlm-train train=false scores a checkpoint too)"),
    "debug": (LHT, "charlm-train debug=fdr|overfit|limit|profiler"),
}

NAMES = {"train": TRAIN, "generate": GENERATE_NAMES, "evaluate": EVALUATE_NAMES}


def pointer(command: str, key: str) -> str | None:
    """`compile` for train -> "nanoGPT's name; charlm's is model.compile=true", or None for a name no peer uses."""
    found = NAMES.get(command, {}).get(key.lstrip("-+~").replace("-", "_"))
    if found is None:
        return None
    tool, ours = found
    return f"that is {tool}'s name; in charlm use {ours}"
