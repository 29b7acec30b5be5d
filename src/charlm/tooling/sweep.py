"""Sweeps: each job's record, and one summary of all jobs when a multirun ends.

A job leaves `result.json` in its run directory: the `charlm.callbacks.RunResult` Lightning callback writes the
model size and val/loss record when training ends, and `SweepCallback.on_job_end` (a Hydra
callback, registered in conf/hydra/default.yaml) adds the status, error and wall time.

Hydra stops a sweep at the first job that raises (the basic and Optuna sweepers re-raise its
exception once its batch is done, and `on_multirun_end` never runs). With `keep_going` a
failed job is recorded, logged and handed to the sweeper as a job that returned None instead,
so the other jobs still run and the summary still gets written. None, not NaN: the Optuna
sweeper marks a None trial failed and goes on, while a NaN makes it crash (it tells Optuna the
NaN, then tells it again as a failure).

`on_multirun_end` writes summary.md, summary.csv and val_loss.png into the sweep directory from
each job's result.json and TensorBoard events. `python -m charlm.tooling.sweep SWEEP_DIR` writes them
again, e.g. for a sweep that was killed.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from charlm.errors import CharLMError, RunInterrupted, one_line
from charlm.naming import HYDRA_ESCAPE
from charlm.record import RESULT_FILE, read_result, update_result

log = logging.getLogger(__name__)

_current_sweep: dict[str, Path] = {}  # the sweep this process runs, for `failed_sweep_message`
SUMMARY_COLUMNS = (
    "job",
    "dir",
    "overrides",
    "num_params",
    "steps",
    "best_val_loss",
    "best_val_bpc",
    "best_val_seconds",
    "final_val_loss",
    "final_val_bpc",
    "tokens_per_sec",
    "wall_time_s",
    "status",
    "error",
)


def is_rank_zero() -> bool:
    """False in the extra DDP ranks, which run the same Hydra job in the same directory."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


class SweepCallback(Callback):
    """Records each job in its result.json; in a multirun, keeps going past failed jobs and summarises."""

    def __init__(self, keep_going: bool = True):
        self.keep_going = keep_going
        self._started = time.monotonic()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Remember the sweep dir; create the folder of an Optuna storage file, which SQLite will not."""
        _current_sweep["dir"] = Path(config.hydra.sweep.dir)
        storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.monotonic()
        if is_rank_zero():
            (Path(config.hydra.runtime.output_dir) / RESULT_FILE).unlink(missing_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        failed = job_return.status == JobStatus.FAILED
        error = job_return._return_value if failed else None  # `.return_value` would raise it
        multirun = config.hydra.mode == RunMode.MULTIRUN
        if error is not None and multirun:  # a single run's error is reported by Hydra itself
            log_failure(config, job_return, error)
        if is_rank_zero():
            record_job(config, job_return, error, time.monotonic() - self._started)
        if failed and self.keep_going and multirun and not isinstance(error, RunInterrupted):  # Ctrl-C ends all
            job_return.status = JobStatus.COMPLETED
            job_return.return_value = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            rows = write_summary(sweep_dir)
        except Exception:  # the jobs are done and kept: a summary bug must not turn the sweep into a failure
            log.exception(f"could not write the sweep summary; retry with: python -m charlm.tooling.sweep {sweep_dir}")
            return
        failed = [row for row in rows if row["status"] != "ok"]
        if failed:
            log.warning(
                f"{len(failed)} of {len(rows)} jobs failed: "
                + "; ".join(f"#{row['job']} {row['error']}" for row in failed)
            )


def failed_sweep_message() -> str | None:
    """When every job of this process's sweep failed: one line naming the first job's error."""
    sweep_dir = _current_sweep.get("dir")
    if sweep_dir is None or not sweep_dir.is_dir():
        return None
    results = [r for r in (read_result(d) for d in job_dirs(sweep_dir)) if r.get("status")]
    if not results or any(r["status"] == "ok" and r.get("return_value") is not None for r in results):
        return None
    first = min(results, key=lambda r: r.get("job") if isinstance(r.get("job"), int) else math.inf)
    what = "failed" if first["status"] == "failed" else "ended without a val/loss"
    reason = first.get("error") or "it never validated (is trainer.limit_val_batches=0?)"
    return (
        f"all {len(results)} jobs of the sweep in {sweep_dir} {what}; the first "
        f"(#{first.get('job')} {' '.join(first.get('overrides') or [])}): {reason}"
    )


def log_failure(config: DictConfig, job_return: JobReturn, error: BaseException) -> None:
    """One line for a user error; a bug keeps its traceback (in the console and the job's log)."""
    where = f"job #{config.hydra.job.num} ({' '.join(job_return.overrides or [])})"
    trace = None if isinstance(error, CharLMError) else (type(error), error, error.__traceback__)
    log.error(f"{where} failed: {one_line(error)}", exc_info=trace)


def record_job(config: DictConfig, job_return: JobReturn, error: BaseException | None, wall_time: float) -> None:
    """Add status, error and wall time to the job's result.json."""
    job_num = OmegaConf.select(config, "hydra.job.num", default=None)
    update_result(
        config.hydra.runtime.output_dir,
        job=job_num,
        overrides=list(job_return.overrides or []),
        status="failed" if error is not None else "ok",
        error=one_line(error) if error is not None else "",
        wall_time_s=round(wall_time, 2),
        return_value=job_return._return_value if error is None else None,
    )


# ---- the summary -------------------------------------------------------------------------------


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job directory under the sweep (overrides such as data.path=a/b.txt nest them)."""
    return sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml"))


def read_scalars(job_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """The job's TensorBoard scalars that the summary uses, as (step, value, seconds) lists.

    Seconds count from the job's first event, which the logger writes as training starts, so jobs
    that ran at different times (or side by side) share one time axis.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(job_dir.glob("events.out.tfevents.*")):
        return {}
    events = EventAccumulator(str(job_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags().get("scalars", [])
    try:
        start = events.FirstEventTimestamp()
    except ValueError:  # no event at all yet
        return {}
    return {
        tag: [(e.step, e.value, e.wall_time - start) for e in events.Scalars(tag)]
        for tag in ("val/loss", "val/bpc", "train/tokens_per_sec")
        if tag in tags
    }


def job_number(job_dir: Path) -> int | None:
    hydra_cfg = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text()) or {}
    num = hydra_cfg.get("hydra", {}).get("job", {}).get("num")
    return int(num) if isinstance(num, int) else None


def summary_row(sweep_dir: Path, job_dir: Path) -> dict[str, Any]:
    """One job's line: TensorBoard's val curves and throughput, result.json's size, status and time."""
    result = read_result(job_dir)
    scalars = read_scalars(job_dir)
    loss, bpc = scalars.get("val/loss", []), scalars.get("val/bpc", [])
    best = min(range(len(loss)), key=lambda i: loss[i][1] if math.isfinite(loss[i][1]) else math.inf, default=None)
    rates = [v for _, v, _ in scalars.get("train/tokens_per_sec", [])]
    status = result.get("status") or "failed"
    error = result.get("error", "") if "status" in result else "no result: the job was killed or is still running"
    saved = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    overrides = [HYDRA_ESCAPE.sub(r"\1", o) for o in saved]  # as the user wrote them
    return {
        "job": job_number(job_dir),
        "dir": job_dir.relative_to(sweep_dir).as_posix(),
        "overrides": " ".join(overrides),
        "num_params": result.get("num_params"),
        "steps": result.get("steps", loss[-1][0] + 1 if loss else None),
        "best_val_loss": loss[best][1] if best is not None else result.get("best_val_loss"),
        "best_val_bpc": bpc[best][1] if best is not None and len(bpc) == len(loss) else result.get("best_val_bpc"),
        "best_val_seconds": round(loss[best][2], 1) if best is not None else None,
        "final_val_loss": loss[-1][1] if loss else result.get("final_val_loss"),
        "final_val_bpc": bpc[-1][1] if bpc else result.get("final_val_bpc"),
        "tokens_per_sec": statistics.median(rates) if rates else None,  # the median skips the warm-up interval
        "wall_time_s": result.get("wall_time_s"),
        "status": status,
        "error": error,
        "_val_loss": loss,
        "_overrides": overrides,
    }


def varying_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """Per job, only the overrides that differ between jobs: what tells the jobs apart."""
    parsed = [
        dict(o.split("=", 1) if "=" in o else (o, "") for o in row.get("_overrides", row["overrides"].split()))
        for row in rows
    ]
    keys = {k for p in parsed for k in p}
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    labels = [" ".join(f"{k}={p[k]}" for k in sorted(varying) if k in p) for p in parsed]
    return [label or row["dir"] for label, row in zip(labels, rows, strict=True)]


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown_table(sweep_dir: Path, rows: list[dict[str, Any]], labels: list[str]) -> str:
    header = [
        "#",
        "job",
        "params",
        "best val/loss",
        "best val/bpc",
        "best at (s)",
        "final val/loss",
        "final val/bpc",
        "tokens/s",
        "wall time (s)",
        "status",
    ]
    lines = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(rows)} jobs, {sum(r['status'] == 'ok' for r in rows)} ok. val/loss in nats per character.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row, label in zip(rows, labels, strict=True):
        status = "ok" if row["status"] == "ok" else f"failed: {row['error']}"
        cells = [
            fmt(row["job"]),
            f"`{label}`",
            fmt(row["num_params"]),
            fmt(row["best_val_loss"]),
            fmt(row["best_val_bpc"]),
            fmt(row["best_val_seconds"], 1),
            fmt(row["final_val_loss"]),
            fmt(row["final_val_bpc"]),
            fmt(row["tokens_per_sec"]),
            fmt(row["wall_time_s"], 1),
            status,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    done = [
        (r["best_val_loss"], label)
        for r, label in zip(rows, labels, strict=True)
        if r["status"] == "ok" and isinstance(r["best_val_loss"], float) and math.isfinite(r["best_val_loss"])
    ]
    if done:
        loss, label = min(done)
        lines += ["", f"Best: `{label}` with val/loss {loss:.4f}."]
    return "\n".join(lines) + "\n"


def plot_val_loss(rows: list[dict[str, Any]], labels: list[str], path: Path) -> None:
    """val/loss per job against training step (left) and against seconds of training (right): steps
    compare recipes, seconds compare what each job bought with the time it took (Agg: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5), layout="constrained")
    FigureCanvasAgg(fig)
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    for row, label in zip(rows, labels, strict=True):
        if row["_val_loss"]:
            steps, values, seconds = zip(*row["_val_loss"], strict=True)
            for ax, xs in ((by_step, steps), (by_time, seconds)):
                ax.plot(xs, values, marker="o", markersize=3, label=f"#{row['job']} {label}")
    by_step.set(xlabel="training step", ylabel="val/loss (nats per character)", title="Validation loss by step")
    by_time.set(xlabel="seconds since the job started training", title="Validation loss by time")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
    if by_time.lines:  # below both panels, so long override labels do not squeeze the charts
        handles, names = by_time.get_legend_handles_labels()
        ncols = 2 if max(len(n) for n in names) <= 60 else 1
        fig.legend(handles, names, loc="outside lower center", ncols=ncols, fontsize="small")
    fig.savefig(path, dpi=120, bbox_inches="tight")


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """summary.md, summary.csv and val_loss.png for the sweep; returns the rows."""
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its INFO lines name every event file read
    dirs = job_dirs(sweep_dir)
    rows = sorted((summary_row(sweep_dir, d) for d in dirs), key=lambda r: (r["job"] is None, r["job"] or 0, r["dir"]))
    labels = varying_overrides(rows)
    (sweep_dir / "summary.md").write_text(markdown_table(sweep_dir, rows, labels))
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot_val_loss(rows, labels, sweep_dir / "val_loss.png")
    log.info(f"sweep summary: {sweep_dir / 'summary.md'}\n{(sweep_dir / 'summary.md').read_text()}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Write summary.md, summary.csv and val_loss.png for a sweep.")
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (outputs/multirun/<date>)")
    args = parser.parse_args()
    if not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a directory")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_summary(args.sweep_dir)


if __name__ == "__main__":
    main()
