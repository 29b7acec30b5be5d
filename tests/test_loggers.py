"""logger=csv|mlflow|wandb|many: a tiny real run with each, read back with that logger's own reader.
Every logger gets the metrics, the run's settings and tags, and the text samples; none prints on stdout."""

from __future__ import annotations

import csv
import json
import random
import struct
from pathlib import Path

import pytest
from lightning.pytorch.core.saving import load_hparams_from_yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import tiny_overrides, train_in_process

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets


def train(run: Path, corpus: Path, *overrides: str) -> None:
    """A 6-step LSTM run, validated (and sampled) at steps 3 and 6."""
    train_in_process(run, *tiny_overrides("lstm"), f"data.path={corpus}", *overrides)


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def steps_with(rows: list[dict[str, str]], metric: str) -> list[int]:
    return [int(r["step"]) for r in rows if r.get(metric)]


# ---------------------------------------------------------------------------------------- CSV


def test_csv_logger_writes_metrics_settings_and_samples_in_the_run_dir(corpus, tmp_path, capfd):
    run = tmp_path / "run"
    train(run, corpus, "logger=csv", "tags=dev")
    assert capfd.readouterr().out == ""

    rows = csv_rows(run / "csv" / "metrics.csv")
    assert steps_with(rows, "val/loss") == [3, 6]
    assert steps_with(rows, "train/loss") == [1, 2, 3, 4, 5, 6]
    hparams = load_hparams_from_yaml(run / "csv" / "hparams.yaml")
    assert hparams["model.hidden_size"] == 16 and hparams["model.num_layers"] == 1  # the run's settings
    assert hparams["model"]["hidden_size"] == 16  # the LightningModule's own hyperparameters
    assert hparams["tags"] == "dev"  # a single tag given without brackets stays one tag
    samples = sorted((run / "csv" / "sample").iterdir())
    assert [p.name for p in samples] == ["step_000003.txt", "step_000006.txt"]
    assert all(p.read_text(encoding="utf-8") for p in samples)


def test_seq2seq_val_samples_reach_the_csv_logger_too(tmp_path, capfd):
    rng = random.Random(2)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(1, 5))) for _ in range(80)]
    pairs = tmp_path / "rev.tsv"
    pairs.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words), encoding="utf-8")
    run = tmp_path / "run"
    train_in_process(
        run,
        *["model=seq2seq", "data=pairs", f"data.path={pairs}", "model.hidden_size=16", "model.embedding_dim=8"],
        *["data.batch_size=8", "trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.log_every_n_steps=1"],
        *["logger=csv", "threads=1"],
        *["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"],
    )
    assert capfd.readouterr().out == ""
    sample = (run / "csv" / "val" / "sample" / "step_000003.txt").read_text(encoding="utf-8")
    assert sample.startswith("source: ") and "\ntarget: " in sample and "\noutput: " in sample


# ---------------------------------------------------------------------------------------- MLflow


def test_mlflow_run_has_the_val_loss_history_settings_tags_and_sample_artifacts(corpus, tmp_path, monkeypatch, capfd):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # the config's store is outputs/mlflow.db under the directory a run starts from
    store = f"sqlite:///{tmp_path}/outputs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # mlflow sets it for the process: undone after the test
    run = tmp_path / "run"
    train(run, corpus, "logger=mlflow", "tags=[baseline,tiny]")
    assert capfd.readouterr().out == ""

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("charlm")
    [found] = client.search_runs([experiment.experiment_id])
    run_id = found.info.run_id
    assert found.info.run_name == "run" and found.info.status == "FINISHED"  # named after the run dir
    assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == [3, 6]
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    params = found.data.params
    assert params["model.hidden_size"] == "16" and params["tags"] == "baseline,tiny"
    assert found.data.tags["baseline"] == "true" and found.data.tags["tiny"] == "true"

    artifacts = [a.path for a in client.list_artifacts(run_id, "sample")]
    assert artifacts == ["sample/step_000003.txt", "sample/step_000006.txt"]
    local = Path(client.download_artifacts(run_id, "sample/step_000006.txt", str(tmp_path)))
    assert local.read_text(encoding="utf-8")
    assert (tmp_path / "outputs" / "mlflow-artifacts" / run_id / "artifacts" / "sample").is_dir()


# ---------------------------------------------------------------------------------------- W&B


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B with no network and nothing written outside tmp_path."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))


def wandb_records(path: Path) -> list:
    """The protobuf records of a `.wandb` file: LevelDB's log format (32 KiB blocks of checksummed chunks)
    after W&B's 7-byte header. wandb's own reader of it moved into its Go core."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, chunks, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zeros: the rest of the block is padding
            pos += block - pos % block
            continue
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def items(records: list, kind: str) -> list[dict[str, str]]:
    """The key -> JSON value updates of each record of `kind` (config, history, summary)."""
    field = {"config": "update", "history": "item", "summary": "update"}[kind]
    return [
        {u.key or "/".join(u.nested_key): u.value_json for u in getattr(getattr(r, kind), field)}
        for r in records
        if r.WhichOneof("record_type") == kind
    ]


def offline_run(run: Path) -> tuple[Path, list]:
    [run_dir] = (run / "wandb").glob("offline-run-*")
    [wandb_file] = run_dir.glob("run-*.wandb")
    return run_dir, wandb_records(wandb_file)


@pytest.mark.usefixtures("wandb_offline")
def test_wandb_offline_run_holds_the_settings_tags_val_loss_and_sample_table(corpus, tmp_path, capfd):
    run = tmp_path / "run"
    train(run, corpus, "logger=wandb", "tags=[baseline,tiny]")
    assert capfd.readouterr().out == ""

    run_dir, records = offline_run(run)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs[-1].project == "charlm" and runs[-1].display_name == "run"  # named after the run dir
    assert list(runs[-1].tags) == ["baseline", "tiny"]
    config = {k: v for update in items(records, "config") for k, v in update.items()}
    assert json.loads(config["model.hidden_size"]) == 16 and json.loads(config["tags"]) == "baseline,tiny"
    history = items(records, "history")
    val = [json.loads(h["trainer/global_step"]) for h in history if "val/loss" in h]
    assert val == [3, 6]
    summary = {k: v for update in items(records, "summary") for k, v in update.items()}
    assert "val/loss" in summary and "train/loss" in summary

    tables = [json.loads(h["sample/path"]) for h in history if "sample/path" in h]
    assert len(tables) == 2
    table = json.loads((run_dir / "files" / tables[-1]).read_text(encoding="utf-8"))
    assert table["columns"] == ["step", "text"] and table["data"][0][0] == 6 and table["data"][0][1]
    assert any(r.WhichOneof("record_type") == "exit" for r in records)  # the run was closed when fit ended


@pytest.mark.usefixtures("wandb_offline")
def test_two_wandb_runs_in_one_process_are_two_wandb_runs(corpus, tmp_path):
    """As the jobs of a sweep run in one process: the second must not write into the first's W&B run."""
    first, second = tmp_path / "first", tmp_path / "second"
    train(first, corpus, "logger=wandb", "trainer.max_steps=3")
    train(second, corpus, "logger=wandb", "trainer.max_steps=3")
    ids = set()
    for run in (first, second):
        _, records = offline_run(run)
        [run_id] = {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"}
        ids.add(run_id)
        assert [json.loads(h["trainer/global_step"]) for h in items(records, "history") if "val/loss" in h] == [3]
    assert len(ids) == 2


# ---------------------------------------------------------------------------------------- many


def test_many_writes_tensorboard_with_samples_and_hparams_and_csv(corpus, tmp_path, capfd):
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = tmp_path / "run"
    train(run, corpus, "logger=many", "tags=[a,b]")
    assert capfd.readouterr().out == ""

    assert list(run.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [3, 6]
    samples = events.Tensors("sample/text_summary")
    assert [e.step for e in samples] == [3, 6]
    assert samples[-1].tensor_proto.string_val[0].decode().startswith("    ")  # a verbatim Markdown block

    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/loss"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.hidden_size"].number_value == 16 and hparams["tags"].string_value == "a,b"

    rows = csv_rows(run / "csv" / "metrics.csv")
    assert steps_with(rows, "val/loss") == [3, 6]
    assert (run / "csv" / "sample" / "step_000006.txt").read_text(encoding="utf-8")
