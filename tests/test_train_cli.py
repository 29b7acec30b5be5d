"""The real `train.py` and `generate.py` commands, as a user runs them, on tiny models; what training logs."""

from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from charlm import callbacks
from charlm.callbacks import TokenThroughput

from conftest import MODELS, run_command, tiny_overrides, train_command


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_logs_samples_checkpoints_and_generates(model, trained_run):
    run = trained_run(model)  # trained with tiny_overrides(model) on the corpus fixture's text
    acc = events(run)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/bpc", "train/lr", "train/tokens_per_sec"} <= scalars, scalars
    val = [e.value for e in acc.Scalars("val/loss")]
    assert [e.step for e in acc.Scalars("val/loss")] == [3, 6]
    bpc = acc.Scalars("val/bpc")[-1].value
    assert abs(bpc - val[-1] / 0.6931471805599453) < 1e-4
    assert any("sample" in tag for tag in acc.Tags()["tensors"])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / ".hydra" / "config.yaml").is_file()

    out = run_command("generate.py", f"ckpt_path={run}", "prompt=KING:", "max_new_tokens=40", "seed=1")
    assert out.returncode == 0, out.stderr[-2000:]
    again = run_command(
        "generate.py",
        f"ckpt_path={run}/checkpoints/last.ckpt",
        "prompt=KING:",
        "max_new_tokens=40",
        "seed=1",
        "which=last",
    )
    assert out.stdout.startswith("KING:") and len(out.stdout.rstrip("\n")) >= 40
    assert again.returncode == 0


def test_no_validation_means_no_val_loss_and_no_samples(corpus, tmp_path):
    run = tmp_path / "run"
    done = train_command(run, *tiny_overrides("bigram"), f"data.path={corpus}", "trainer.limit_val_batches=0")
    assert done.returncode == 0, done.stderr[-3000:]
    acc = events(run)
    assert "val/loss" not in acc.Tags()["scalars"] and "train/loss" in acc.Tags()["scalars"]
    assert not any("sample" in tag for tag in acc.Tags()["tensors"])
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_generate_is_reproducible_with_a_seed_and_varies_without(trained_run):
    run = trained_run("lstm")
    texts = [
        run_command("generate.py", f"ckpt_path={run}", f"seed={s}", "max_new_tokens=80", "num_samples=2").stdout
        for s in (5, 5, 6)
    ]
    assert texts[0] == texts[1] and texts[0] != texts[2]
    greedy = run_command("generate.py", f"ckpt_path={run}", "greedy=true", "use_cache=false", "max_new_tokens=30")
    cached = run_command("generate.py", f"ckpt_path={run}", "greedy=true", "max_new_tokens=30")
    assert greedy.returncode == 0 and greedy.stdout == cached.stdout


# ---------------------------------------------------------------------------------------- throughput


class Recorder:
    """A logger that keeps what it is given."""

    def __init__(self):
        self.logged: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.logged.append((step, metrics))


class StandInTrainer:
    def __init__(self, logger: Recorder):
        self.global_step, self.world_size, self.is_global_zero, self.loggers = 0, 1, True, [logger]


def drive_throughput(callback, steps: int, accumulate: int, tokens: int = 10) -> Recorder:
    """Micro-batches as Lightning runs them: the last one of each step ends after the optimiser step.

    Each micro-batch takes one second of the callback's clock.
    """
    now = [0.0]
    logger = Recorder()
    trainer, batch = StandInTrainer(logger), {"x": torch.zeros(1, tokens)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(callbacks.time, "perf_counter", lambda: now[0])
        callback.on_train_start(trainer, None)
        for index in range(steps * accumulate):
            callback.on_train_batch_start(trainer, None, batch, index)
            now[0] += 1.0
            if (index + 1) % accumulate == 0:
                trainer.global_step += 1
            callback.on_train_batch_end(trainer, None, None, batch, index)
    return logger


def test_throughput_with_gradient_accumulation_counts_every_micro_batch_and_logs_once_per_interval():
    logger = drive_throughput(TokenThroughput(every_n_steps=2), steps=6, accumulate=3)
    assert [step for step, _ in logger.logged] == [2, 4, 6]
    # each interval: 2 steps x 3 micro-batches x 10 tokens in 6 seconds
    assert [metrics["train/tokens_per_sec"] for _, metrics in logger.logged] == [pytest.approx(10.0)] * 3
    plain = drive_throughput(TokenThroughput(every_n_steps=2), steps=6, accumulate=1)
    assert [step for step, _ in plain.logged] == [2, 4, 6]


def test_throughput_every_zero_steps_never_logs():
    assert drive_throughput(TokenThroughput(every_n_steps=0), steps=4, accumulate=2).logged == []


def test_throughput_logs_once_per_interval_in_a_real_run_with_gradient_accumulation(tmp_path):
    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch["x"].float()).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    steps = []

    class StepLogger(L.pytorch.loggers.logger.DummyLogger):
        def log_metrics(self, metrics, step=None):
            if "train/tokens_per_sec" in metrics:
                steps.append(step)

    data = [{"x": torch.ones(2, 4)} for _ in range(12)]
    trainer = L.Trainer(
        max_steps=6,
        accumulate_grad_batches=2,
        logger=StepLogger(),
        log_every_n_steps=1,
        callbacks=[TokenThroughput(every_n_steps=2)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=None))
    assert steps == [2, 4, 6]
