"""What a training run prints: nothing on stdout, its own facts once on stderr, no third-party notices."""

import pytest

from conftest import tiny_overrides, train_script

NOTICES = ("LeafSpec", "litlogger", "Tip:", "`__len__` defined", "limit_val_batches=1.0", "not resumable", "Warning")


@pytest.mark.slow
def test_training_prints_nothing_on_stdout_and_no_third_party_notices(tmp_path, corpus):
    shown = [o for o in tiny_overrides("lstm") if not o.startswith("trainer.enable_")]  # bar and table on
    run = tmp_path / "run"
    first = train_script(run, *shown, f"data.path={corpus}", "trainer.max_steps=4")
    resumed = train_script(run, *shown, f"data.path={corpus}", "trainer.max_steps=7", "ckpt_path=last")
    for done in (first, resumed):
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout == ""
        assert "Total params" in done.stderr and "it/s" in done.stderr  # the table and the bar, on stderr
        assert [n for n in NOTICES if n in done.stderr] == []
        assert done.stderr.count("corpus: ") == 1  # prepared (or found prepared) once, said once
