"""scheduler.budget=time: warm-up and cosine decay follow elapsed training time as a fraction of
trainer.max_time, so a run ends at its floor lr however fast the machine is, and across a resume."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Timer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from charlm.config import check_config, schedule_budget
from charlm.errors import CharLMError
from charlm.schedule import TimedWarmupCosine, optimizer_and_schedule, time_progress

from conftest import compose_train, tiny_overrides, train_command

BUDGET_S = 100.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Lightning's Timer reads time.monotonic; this clock moves only when the test says so."""
    now = SimpleNamespace(t=1000.0)
    monkeypatch.setattr("lightning.pytorch.callbacks.timer.time.monotonic", lambda: now.t)
    return now


def started_timer(offset: dict | None = None) -> Timer:
    timer = Timer(duration={"seconds": BUDGET_S})
    if offset is not None:
        timer.load_state_dict(offset)
    timer.on_train_start(None, None)
    return timer


def factor_at(schedule: TimedWarmupCosine, trainer: SimpleNamespace) -> float:
    schedule.progress = time_progress(trainer)
    return schedule(0)  # the step number plays no part


def test_the_factor_rises_during_warm_up_and_ends_exactly_at_the_floor(clock):
    trainer = SimpleNamespace(callbacks=[object(), started_timer()])
    schedule = TimedWarmupCosine(warmup_fraction=0.1, min_ratio=0.1)
    start = clock.t
    factors = []
    for second in range(0, 101):
        clock.t = start + second
        factors.append(factor_at(schedule, trainer))
    warm, decay = factors[:11], factors[10:]
    assert all(a < b for a, b in pairwise(warm))  # rises through the first 10% of the budget
    assert factors[10] == 1.0
    assert all(a > b for a, b in pairwise(decay))  # then decays
    assert factors[100] == 0.1  # exactly min_lr_ratio at the budget's end
    clock.t = start + 2 * BUDGET_S
    assert factor_at(schedule, trainer) == 0.1  # and stays there if the last step overruns


def test_elapsed_time_survives_a_resume(clock):
    first = started_timer()
    clock.t += 60
    saved = first.state_dict()
    clock.t += 3600  # the process was dead for an hour: that time does not count
    resumed = SimpleNamespace(callbacks=[started_timer(saved)])
    assert time_progress(resumed) == pytest.approx(0.6)
    clock.t += 40
    assert time_progress(resumed) == pytest.approx(1.0)


def test_the_lambda_lr_scales_every_group_by_the_time_factor():
    net = torch.nn.Linear(4, 4)
    optimizer, scheduler = optimizer_and_schedule(
        net,
        {"_target_": "torch.optim.AdamW", "lr": 0.01},
        {"budget": "time", "warmup_fraction": 0.0, "min_lr_ratio": 0.2},
        max_steps=1_000_000,
    )
    factor = scheduler.lr_lambdas[0]
    assert isinstance(factor, TimedWarmupCosine)
    factor.progress = 1.0
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(0.002)] * 2
    assert scheduler.state_dict()["lr_lambdas"][0]["progress"] == 1.0  # saved with the checkpoint


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scheduler.budget=time"], "scheduler.budget=time needs trainer.max_time"),
        (["scheduler.budget=hours"], "scheduler.budget"),
        (["scheduler.budget=steps", "trainer.max_time=00:00:01:00"], "scheduler.budget=steps decays over"),
        (["scheduler.budget=time", "trainer.max_time=00:00:01:00", "scheduler.warmup_fraction=1.0"], "warmup_fraction"),
    ],
)
def test_bad_time_budget_settings_are_refused(overrides, message, tmp_path):
    cfg = compose_train([f"hydra.run.dir={tmp_path}", *overrides])
    with pytest.raises(CharLMError, match=message):
        check_config(cfg)


def test_a_max_time_alone_makes_the_budget_time_and_lifts_the_step_limit(tmp_path):
    timed = compose_train([f"hydra.run.dir={tmp_path}", "trainer.max_time=00:00:02:00"])
    assert schedule_budget(timed) == "time" and timed.trainer.max_steps == -1
    check_config(timed)
    untimed = compose_train([f"hydra.run.dir={tmp_path}"])
    assert schedule_budget(untimed) == "steps" and untimed.trainer.max_steps == 3600
    capped = compose_train([f"hydra.run.dir={tmp_path}", "trainer.max_time=00:00:02:00", "trainer.max_steps=500"])
    assert schedule_budget(capped) == "time" and capped.trainer.max_steps == 500  # whichever ends first


def scalars(run) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_time_budgeted_run_stops_on_time_at_its_floor_lr_and_validates_its_last_step(corpus, tmp_path):
    run = tmp_path / "run"
    done = train_command(
        run,
        *(o for o in tiny_overrides("lstm") if not o.startswith("trainer.max_steps")),  # the default, lifted
        f"data.path={corpus}",
        "trainer.val_check_interval=100000",
        "trainer.max_time=00:00:00:05",  # scheduler.budget=auto: the schedule follows the clock
        "scheduler.warmup_fraction=0.1",
        "scheduler.min_lr_ratio=0.1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    reached = ckpt["global_step"]
    [elapsed] = [v["time_elapsed"]["train"] for k, v in ckpt["callbacks"].items() if k.startswith("Timer")]
    assert 5.0 <= elapsed < 10.0  # stopped on time (a few steps' slack on a busy machine)
    logged = scalars(run)
    assert [step for step, _ in logged["val/loss"]] == [reached]  # the last step is validated
    lrs = [value for _, value in logged["train/lr"]]
    assert logged["train/lr"][-1][0] == reached
    lr = compose_train([]).optimizer.lr
    assert lrs[-1] == pytest.approx(0.1 * lr, rel=1e-3)  # decayed to the floor at the last step
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1 and lrs[0] < lrs[peak] and lrs[-1] < lrs[peak]
