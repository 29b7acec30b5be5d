"""What a run writes besides metrics, for every logger it has: text samples, its settings and its tags.

Lightning passes metrics to each logger itself; text, settings and tags have no such common call,
so each logger gets them here in its own form:
- TensorBoard: the TEXT tab (Markdown) and the HPARAMS tab, with `val/loss` as its metric;
- CSV: `<log dir>/<tag>/step_000600.txt`, and the settings in `<log dir>/hparams.yaml`;
- MLflow: artifacts `<tag>/step_000600.txt`, the settings as params, each tag as a run tag;
- W&B: a table per text under its tag, the settings in the run's config, the tags as its tags.
Images (`log_image`) and embeddings (`log_embedding`) take the same routes where a logger has them.
TensorBoard and CSV have the tags as the setting `tags` (comma-joined). MLflow and W&B runs are
named after the run dir unless their config names them; the W&B run is closed when fit ends, so
that the next job of a sweep in the same process gets a run of its own.
Any other Lightning logger gets the settings through `log_hyperparams`, and no text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from torch.utils.tensorboard.summary import hparams as hparams_summary

# MLflow 3 sends usage telemetry to its makers from a background thread (a DNS lookup even with no
# network); set before mlflow is first imported, which happens when an MLFlowLogger is built.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def as_markdown_block(text: str) -> str:
    """TensorBoard renders text as Markdown; indenting keeps the sample's line breaks."""
    return "\n".join("    " + line for line in text.split("\n"))


def text_file(tag: str, step: int) -> str:
    """Where a text goes in a CSV log dir or among MLflow's artifacts: `sample/step_000600.txt`."""
    return f"{tag}/step_{step:06d}.txt"


def log_text(trainer: L.Trainer, tag: str, text: str, step: int) -> None:
    """`text` at `step` under `tag` (e.g. `sample`), for every logger of the run."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(tag, as_markdown_block(text), step)
        elif isinstance(logger, CSVLogger):
            path = Path(logger.log_dir) / text_file(tag, step)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_text(logger.run_id, text, text_file(tag, step))
        elif isinstance(logger, WandbLogger):
            logger.log_text(key=tag, columns=["step", "text"], data=[[step, text]], step=step)


def image_file(tag: str, step: int) -> str:
    """Where an image goes in a CSV log dir or among MLflow's artifacts: `insight/surprise/step_000600.png`."""
    return f"{tag}/step_{step:06d}.png"


def log_image(trainer: L.Trainer, tag: str, image: np.ndarray, step: int) -> None:
    """An RGB image (H, W, 3) uint8 at `step` under `tag`, for every logger of the run: TensorBoard's IMAGES tab,
    a PNG in the CSV log dir, an MLflow artifact, a W&B image."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif isinstance(logger, CSVLogger):
            from PIL import Image

            path = Path(logger.log_dir) / image_file(tag, step)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_image(logger.run_id, image, artifact_file=image_file(tag, step))
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[image], step=step)


def log_embedding(trainer: L.Trainer, tag: str, matrix: np.ndarray, labels: list[str], step: int) -> None:
    """Vectors (N, D) with a label each for TensorBoard's PROJECTOR tab; the other loggers have no such view,
    and a CSV log dir gets them as `<tag>.tsv` with `<tag>_labels.tsv` (the files the standalone projector reads)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_embedding(matrix, metadata=labels, tag=tag, global_step=step)
        elif isinstance(logger, CSVLogger):
            base = Path(logger.log_dir) / tag.replace("/", "_")
            np.savetxt(f"{base}.tsv", matrix, delimiter="\t", fmt="%.6g")
            Path(f"{base}_labels.tsv").write_text("\n".join(labels) + "\n", encoding="utf-8")


def scalar(value: Any) -> int | float | str | bool:
    """A value TensorBoard's HPARAMS tab takes: numbers, strings and booleans as they are, the rest as text."""
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def log_hparams(trainer: L.Trainer, params: dict[str, Any], metrics: dict[str, float]) -> None:
    """The run's settings (flat: `model.hidden_size`, ...; `tags` a list) for every logger of the run.

    `metrics` are the names TensorBoard's HPARAMS tab shows beside the settings (values are placeholders;
    the real ones are the scalars of the same name). An MLflow run tag is `<tag> = true`.
    """
    tags = params.get("tags") or []
    tags = [tags] if isinstance(tags, str) else [str(t) for t in tags]  # tags=dev is one tag, not three
    flat = {**{k: scalar(v) for k, v in params.items()}, "tags": ",".join(tags)}
    run_name = Path(trainer.default_root_dir).name
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            # Not logger.log_hyperparams: with metrics it also writes them as scalars at step 0.
            writer = logger.experiment._get_file_writer()
            for summary in hparams_summary(flat, metrics):
                writer.add_summary(summary)
            continue
        logger.log_hyperparams(flat)
        if isinstance(logger, MLFlowLogger):
            client, run_id = logger.experiment, logger.run_id
            for tag in tags:
                client.set_tag(run_id, tag, "true")
            if getattr(logger, "_run_name", None) is None:
                client.set_tag(run_id, "mlflow.runName", run_name)
        elif isinstance(logger, WandbLogger):
            run = logger.experiment
            run.tags = (*run.tags, *(t for t in tags if t not in run.tags))
            if not getattr(logger, "_wandb_init", {}).get("name"):
                run.name = run_name


def finish(trainer: L.Trainer, failed: bool = False) -> None:
    """Close the run's W&B run (Lightning leaves it open, and a second WandbLogger in this process
    would write into it); the other loggers close themselves."""
    for logger in trainer.loggers:
        run = getattr(logger, "_experiment", None) if isinstance(logger, WandbLogger) else None
        if run is not None:
            run.finish(exit_code=1 if failed else 0)
