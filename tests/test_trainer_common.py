"""The trainers' shared pieces: config, schedule, checkpoints, EMA, metrics, DDP wiring, loop.

The loop is tested with a toy regression model and a small in-memory loader that follows
decal's loader protocol (one epoch per ``iter``, ``len``, ``epoch``, ``state_dict`` /
``load_state_dict``), so these tests run in seconds and do not need DALI.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from torch import nn

from decal.trainers.common.checkpoint import Checkpointer, load_checkpoint
from decal.trainers.common.config import (
    ConfigError,
    DataConfig,
    EmaConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    from_dict,
    load_config,
    parse_overrides,
    save_config,
    to_dict,
)
from decal.trainers.common.data import REMOTE_PIPELINES, build_loader, loader_options, read_categories
from decal.trainers.common.distributed import DistInfo, cleanup, init_distributed, resolve_device, unwrap_model, wrap_model
from decal.trainers.common.ema import ModelEma
from decal.trainers.common.loop import Hook, StepOutput, TrainLoop
from decal.trainers.common.metrics import MetricLogger, WindowAverage, read_jsonl
from decal.trainers.common.optim import build_optimizer, build_scheduler, lr_factor, scaled_lr

from polling import wait_until
from progress_capture import CountingTqdm, count_bars, progress_lines
from worker_resources import os_thread_names


# --------------------------------------------------------------------------- config


@dataclass
class _Inner:
    rate: float = 0.1
    count: int = 2
    mode: Literal["a", "b"] = "a"
    pair: tuple[float, float] = (1.0, 2.0)
    sizes: tuple[int, ...] = (1, 2)
    maybe: float | None = None
    anything: Any = "lsj"


@dataclass
class _Root:
    name: str = "x"
    flag: bool = False
    inner: _Inner = field(default_factory=_Inner)


def test_from_dict_converts_and_checks_types() -> None:
    cfg = from_dict(_Root, {"inner": {"rate": 1, "pair": [3, 4], "sizes": [5], "maybe": "none", "anything": [0.5, 1.5]}})
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert cfg.inner.pair == (3.0, 4.0)
    assert cfg.inner.sizes == (5,)
    assert cfg.inner.maybe is None
    assert cfg.inner.anything == (0.5, 1.5)
    assert cfg.name == "x"
    with pytest.raises(ConfigError, match="inner.count"):
        from_dict(_Root, {"inner": {"count": 1.5}})
    with pytest.raises(ConfigError, match="inner.mode"):
        from_dict(_Root, {"inner": {"mode": "c"}})
    with pytest.raises(ConfigError, match="inner.typo"):
        from_dict(_Root, {"inner": {"typo": 1}})
    with pytest.raises(ConfigError, match="flag"):
        from_dict(_Root, {"flag": 1})
    with pytest.raises(ConfigError, match="inner.pair"):
        from_dict(_Root, {"inner": {"pair": [1, 2, 3]}})


@pytest.mark.parametrize(
    "update, message",
    [
        ({"flag": 1}, "flag: expected true or false, got 1"),
        ({"name": 3}, "name: expected a string, got 3"),
        ({"inner": {"count": True}}, "inner.count: expected an integer, got True"),
        ({"inner": {"count": "2"}}, "inner.count: expected an integer, got '2'"),
        ({"inner": {"rate": False}}, "inner.rate: expected a number, got False"),
        ({"inner": {"rate": "0.5"}}, "inner.rate: expected a number, got '0.5'"),
    ],
)
def test_from_dict_scalar_errors_name_the_field_and_the_type(update: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        from_dict(_Root, update)


def test_from_dict_scalars_accepted() -> None:
    cfg = from_dict(_Root, {"flag": True, "name": "y", "inner": {"count": 4, "rate": 2}})
    assert cfg.flag is True and cfg.name == "y" and cfg.inner.count == 4
    assert cfg.inner.rate == 2.0 and type(cfg.inner.rate) is float


def test_load_config_precedence(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "small"\nname = "file"\n[inner]\nrate = 0.5\ncount = 7\n')
    presets = {"small": {"name": "preset", "inner": {"rate": 0.01, "count": 3, "mode": "b"}}}
    cfg = load_config(_Root, toml, presets=presets, overrides=["inner.count=9", "flag=true"], updates={"name": "flag"})
    assert cfg.inner.mode == "b"  # from the preset
    assert cfg.inner.rate == 0.5  # the file beats the preset
    assert cfg.inner.count == 9  # --set beats the file
    assert cfg.flag is True
    assert cfg.name == "flag"  # named flags win
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(_Root, presets=presets, preset="nope")
    assert parse_overrides(["a.b=[1, 2]", "a.c=word"]) == {"a": {"b": [1, 2], "c": "word"}}


def test_config_round_trip(tmp_path: Path) -> None:
    cfg = from_dict(_Root, {"inner": {"pair": [3, 4]}})
    path = save_config(cfg, tmp_path / "config.json")
    assert from_dict(_Root, json.loads(path.read_text())) == cfg
    assert to_dict(cfg)["inner"]["pair"] == [3.0, 4.0]


def test_shared_sections_have_defaults() -> None:
    for section in (DataConfig, OptimConfig, ScheduleConfig, RunConfig, EmaConfig):
        assert from_dict(section, {}) == section()


# --------------------------------------------------------------------------- optimiser and schedule


def test_linear_scaling_rule() -> None:
    cfg = OptimConfig(lr=0.32, base_batch_size=256)
    assert scaled_lr(cfg, 64) == pytest.approx(0.08)
    assert scaled_lr(OptimConfig(lr=0.32, scale_lr=False), 64) == 0.32


def test_warmup_and_step_schedule() -> None:
    cfg = ScheduleConfig(name="step", warmup_iters=10, warmup_factor=0.001, milestones=(0.9, 0.95), gamma=0.1)
    assert lr_factor(cfg, 0, 100) == pytest.approx(0.001)
    assert lr_factor(cfg, 5, 100) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(cfg, 10, 100) == 1.0
    assert lr_factor(cfg, 89, 100) == 1.0
    assert lr_factor(cfg, 90, 100) == pytest.approx(0.1)
    assert lr_factor(cfg, 99, 100) == pytest.approx(0.01)


def test_cosine_schedule_and_scheduler_resume() -> None:
    cfg = ScheduleConfig(name="cosine", warmup_iters=0, min_lr_factor=0.0)
    assert lr_factor(cfg, 0, 100) == pytest.approx(1.0)
    assert lr_factor(cfg, 50, 100) == pytest.approx(0.5)
    assert lr_factor(cfg, 100, 100) == pytest.approx(0.0, abs=1e-12)
    model = nn.Linear(2, 1)
    optimizer = build_optimizer(OptimConfig(name="sgd", lr=1.0, scale_lr=False), model, global_batch_size=1)
    scheduler = build_scheduler(cfg, optimizer, 100)
    for _ in range(30):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    optimizer2 = build_optimizer(OptimConfig(name="sgd", lr=1.0, scale_lr=False), model, global_batch_size=1)
    scheduler2 = build_scheduler(cfg, optimizer2, 100)
    scheduler2.load_state_dict(state)
    optimizer2.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]
    optimizer.step(), scheduler.step()
    optimizer2.step(), scheduler2.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(optimizer2.param_groups[0]["lr"])


def test_no_decay_groups() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = build_optimizer(OptimConfig(name="adamw", decay_norm_and_bias=False), model, global_batch_size=256)
    decayed, plain = optimizer.param_groups
    assert len(decayed["params"]) == 1 and decayed["params"][0] is model[0].weight
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0


# --------------------------------------------------------------------------- checkpoints, EMA, metrics


def test_checkpointer_latest_prune_and_resolve(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path / "ck", keep_last=2)
    assert ckpt.latest() is None and ckpt.resolve("auto") is None and ckpt.resolve("") is None
    for step in (5, 10, 15):
        ckpt.save({"step": step}, step)
    names = [p.name for p in ckpt.checkpoints()]
    assert names == ["checkpoint_00000010.pt", "checkpoint_00000015.pt"]
    assert load_checkpoint(ckpt.latest())["step"] == 15
    assert ckpt.resolve("auto") == ckpt.latest()
    assert not list((tmp_path / "ck").glob("*.tmp"))
    with pytest.raises(FileNotFoundError):
        ckpt.resolve(tmp_path / "missing.pt")
    assert Checkpointer(tmp_path / "other", enabled=False).save({"a": 1}, 1) is None
    assert not (tmp_path / "other").exists()


def test_ema_matches_formula_and_copies_integer_buffers() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = ModelEma(model, decay=0.9, warmup=False)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()
    model(torch.randn(4, 3))  # moves BN statistics and num_batches_tracked
    ema.update(model)
    now = model.state_dict()
    for key, value in ema.module.state_dict().items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, 0.9 * start[key] + 0.1 * now[key])
        else:
            assert torch.equal(value, now[key])
    assert not any(p.requires_grad for p in ema.module.parameters())
    warm = ModelEma(model, decay=0.9998, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)
    warm.update(model)
    assert warm.current_decay() == pytest.approx(2 / 11)


def test_metric_logger_writes_jsonl(tmp_path: Path) -> None:
    with MetricLogger(tmp_path, tensorboard=True) as logger:
        logger.log("train", 1, {"loss": torch.tensor(2.5), "lr": 0.1}, epoch=0)
        logger.log("eval", 2, {"AP": float("nan")})
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert records[0]["loss"] == 2.5 and records[0]["split"] == "train" and records[0]["epoch"] == 0
    assert records[1]["AP"] is None  # NaN is not JSON
    assert read_jsonl(tmp_path / "metrics.jsonl", split="eval")[0]["step"] == 2
    silent = MetricLogger(tmp_path / "silent", enabled=False)
    assert silent.log("train", 1, {"a": 1}) is None and not (tmp_path / "silent").exists()
    window = WindowAverage()
    window.update({"a": 1.0})
    window.update({"a": 3.0})
    assert window.averages() == {"a": 2.0}
    assert WindowAverage.combine([({"a": 2.0}, {"a": 1}), ({"a": 6.0}, {"a": 2})]) == {"a": pytest.approx(8 / 3)}


# --------------------------------------------------------------------------- distributed wiring


def test_single_process_without_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("auto", "cpu")
    assert info == DistInfo(0, 1, 0, None) and not info.distributed and info.is_main
    assert resolve_device("cpu", info).type == "cpu"
    model = nn.Linear(1, 1)
    assert wrap_model(model, info, torch.device("cpu")) is model
    assert unwrap_model(nn.DataParallel(model)) is model


def test_loader_options_one_shard_per_rank() -> None:
    """On the loader config the detection trainer really passes (its ``device`` left to the loader)."""
    from decal.dali_pipes.copy_paste.loader import CopyPasteLoaderConfig

    info = DistInfo(rank=3, world_size=4, local_rank=1, backend="gloo")
    options = loader_options(CopyPasteLoaderConfig(batch_size=4), info, torch.device("cpu"))
    assert options["shard_id"] == 3 and options["num_shards"] == 4 and options["device_id"] == 0
    assert options["batch_size"] == 4 and options["device"] == "cpu"
    cuda_options = loader_options(CopyPasteLoaderConfig(batch_size=4), info, torch.device("cuda", 1))
    assert cuda_options["device_id"] == 1 and cuda_options["device"] is None


def test_build_loader_local_and_remote(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple] = []
    local = build_loader(
        DataConfig(train_annotations="a.json", train_images="img"),
        {"batch_size": 2, "shard_id": 1, "num_shards": 2},
        local_factory=lambda *a, **k: calls.append((a, k)) or "local",
    )
    assert local == "local" and calls == [(("a.json", "img"), {"batch_size": 2, "shard_id": 1, "num_shards": 2})]
    with pytest.raises(ValueError, match="no training data"):
        build_loader(DataConfig(), {}, local_factory=lambda *a, **k: None)

    import sys
    import types

    class FakeRemote:
        def __init__(self, address: str, dataset: str, **options: Any) -> None:
            self.args = (address, dataset, options)

    module = types.ModuleType("decal.server.remote_loader")
    module.RemoteLoader = FakeRemote  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "decal.server.remote_loader", module)
    remote = build_loader(
        DataConfig(remote="host:5000", remote_dataset="coco", remote_options={"token": "t"}),
        {"batch_size": 2, "seed": 1, "shard_id": 1, "num_shards": 2, "device": "gpu", "num_threads": 4, "on_error": "skip"},
        local_factory=lambda *a, **k: None,
        device=torch.device("cuda", 1),
    )
    assert remote.args == (
        "host:5000",
        "coco",
        {"batch_size": 2, "seed": 1, "shard_id": 1, "num_shards": 2, "on_error": "skip", "device": "cuda:1", "token": "t",
         "pipeline": "copy-paste"},
    )  # fmt: skip
    categories = tmp_path / "c.json"
    categories.write_text(json.dumps({"categories": [{"id": 7, "name": "box"}]}))
    assert read_categories(remote, categories) == {7: {"id": 7, "name": "box"}}


# --------------------------------------------------------------------------- the loop


class ToyLoader:
    """decal's loader protocol over an in-memory regression dataset."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, seed: int = 0, shard_id: int = 0, num_shards: int = 1) -> None:
        self.x, self.y = x, y
        self.batch_size, self.seed = batch_size, seed
        self.shard_id, self.num_shards = shard_id, num_shards
        self.epoch, self.batch_index = 0, 0
        self.seen: list[list[int]] = []

    def _order(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        order = torch.randperm(len(self.x), generator=g)[self.shard_id :: self.num_shards].tolist()
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __len__(self) -> int:
        return len(self._order(self.epoch))

    def __iter__(self):
        batches = self._order(self.epoch)
        while self.batch_index < len(batches):
            index = batches[self.batch_index]
            self.batch_index += 1
            self.seen.append(index)
            yield self.x[index], self.y[index]
        self.epoch, self.batch_index = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_index": self.batch_index, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch_index = state["epoch"], state["batch_index"]


def _toy_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.3
    return x, y


def _toy_step(model: nn.Module, batch: Any) -> StepOutput:
    x, y = batch
    noise = torch.randn(()) * 0.0  # consumes the RNG, like detection's samplers do
    loss = nn.functional.mse_loss(model(x), y) + noise
    return StepOutput(loss=loss, metrics={"mse": loss.detach()}, batch_size=len(x))


class _RecordingHook(Hook):
    name = "recorder"

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.counter = 0

    def before_epoch(self, loop: TrainLoop, epoch: int) -> None:
        self.events.append(("before_epoch", epoch))

    def after_step(self, loop: TrainLoop, output: StepOutput) -> None:
        self.counter += 1

    def after_epoch(self, loop: TrainLoop, epoch: int) -> None:
        self.events.append(("after_epoch", epoch, loop.step))

    def after_train(self, loop: TrainLoop) -> None:
        self.events.append(("after_train", loop.step))

    def state_dict(self) -> Any:
        return {"counter": self.counter}

    def load_state_dict(self, state: Any) -> None:
        self.counter = state["counter"]


def _toy_loop(out_dir: Path, *, max_iters: int, epochs: int = 0, checkpoint_every: int = 0, ema: bool = True,
              info: DistInfo = DistInfo(), seed: int = 0) -> tuple[TrainLoop, ToyLoader, _RecordingHook]:
    torch.manual_seed(seed + info.rank)
    x, y = _toy_data()
    loader = ToyLoader(x, y, batch_size=8, shard_id=info.rank, num_shards=info.world_size)
    model = nn.Linear(4, 1)
    run = RunConfig(out_dir=str(out_dir), epochs=epochs, max_iters=max_iters, log_every=2, checkpoint_every=checkpoint_every,
                    checkpoint_every_epochs=0, progress=False, device="cpu", keep_checkpoints=0)
    optimizer = build_optimizer(OptimConfig(name="sgd", lr=0.05, scale_lr=False, momentum=0.9, weight_decay=0.0), model, global_batch_size=8)
    total = max_iters if max_iters > 0 else epochs * len(loader)
    scheduler = build_scheduler(ScheduleConfig(name="cosine", warmup_iters=3, warmup_factor=0.1), optimizer, total)
    hook = _RecordingHook()
    loop = TrainLoop(
        model=wrap_model(model, info, torch.device("cpu")),
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        step_fn=_toy_step,
        run=run,
        info=info,
        device=torch.device("cpu"),
        total_steps=total,
        grad_clip_norm=5.0,
        ema=ModelEma(model, 0.9) if ema else None,
        logger=MetricLogger(out_dir, enabled=info.is_main, tensorboard=False),
        checkpointer=Checkpointer(out_dir / "checkpoints", keep_last=0, enabled=info.is_main),
        hooks=[hook],
        extra_state={"note": "toy"},
    )
    return loop, loader, hook


def test_loop_trains_logs_and_calls_hooks(tmp_path: Path) -> None:
    loop, loader, hook = _toy_loop(tmp_path, max_iters=0, epochs=3)
    summary = loop.run()
    assert summary["step"] == 3 * 8 and loop.epoch == 3
    assert [e for e in hook.events if e[0] == "after_epoch"] == [("after_epoch", 0, 8), ("after_epoch", 1, 16), ("after_epoch", 2, 24)]
    assert hook.events[-1] == ("after_train", 24) and hook.counter == 24
    records = read_jsonl(tmp_path / "metrics.jsonl", split="train")
    assert [r["step"] for r in records] == list(range(2, 25, 2))
    assert records[-1]["loss"] < 0.25 * records[0]["loss"]
    for key in ("lr", "images_per_s", "data_time", "step_time", "grad_norm", "mse", "ema_decay"):
        assert key in records[-1]
    assert Checkpointer(tmp_path / "checkpoints").latest().name == "checkpoint_00000024.pt"


def test_one_bar_per_run_and_a_loss_line_every_log_every(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    count_bars(monkeypatch)
    loop, _, _ = _toy_loop(tmp_path, max_iters=0, epochs=3)  # 3 epochs of 8 batches, log_every=2
    loop.run_config.progress = True
    loop.run()
    assert len(CountingTqdm.made) == 1  # not one per epoch
    bar = CountingTqdm.made[0]
    assert bar.total == 24 and bar.n == 24
    lines = progress_lines(capfd.readouterr().err)
    assert [step for step, *_ in lines] == list(range(2, 25, 2))
    assert {total for _, total, _, _ in lines} == {24}
    assert [epoch for _, _, epoch, _ in lines] == [(s - 1) // 8 for s in range(2, 25, 2)]
    records = read_jsonl(tmp_path / "metrics.jsonl", split="train")
    assert [round(r["loss"], 4) for r in records] == [loss for *_, loss in lines]  # the window's loss


def test_loss_lines_without_a_bar_and_a_resumed_bar_starts_at_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    count_bars(monkeypatch)
    part, _, _ = _toy_loop(tmp_path, max_iters=5, checkpoint_every=5)
    part.run()  # progress=False: the lines still come
    assert [step for step, *_ in progress_lines(capfd.readouterr().err)] == [2, 4, 5]
    resumed, _, _ = _toy_loop(tmp_path, max_iters=9)
    resumed.run_config.progress = True
    resumed.resume(Checkpointer(tmp_path / "checkpoints").latest())
    resumed.run()
    assert len(CountingTqdm.made) == 2  # one per run
    assert CountingTqdm.made[1].total == 9 and CountingTqdm.made[1].n == 9
    assert [step for step, *_ in progress_lines(capfd.readouterr().err)] == [6, 8, 9]


def test_loop_resume_is_exact(tmp_path: Path) -> None:
    full, full_loader, _ = _toy_loop(tmp_path / "full", max_iters=13)
    full.run()
    part, _, _ = _toy_loop(tmp_path / "part", max_iters=13, checkpoint_every=5)
    part.total_steps = 13
    # stop after 5 steps by running a loop limited to 5, then resume in a fresh loop
    part.total_steps = 5
    part.run()
    checkpoint = Checkpointer(tmp_path / "part" / "checkpoints").latest()
    state = load_checkpoint(checkpoint)
    assert state["step"] == 5 and state["note"] == "toy" and state["loader"] == [{"epoch": 0, "batch_index": 5, "seed": 0}]
    resumed, resumed_loader, resumed_hook = _toy_loop(tmp_path / "part", max_iters=13, seed=99)
    resumed.resume(checkpoint)
    assert resumed.step == 5 and resumed_hook.counter == 5 and resumed_loader.batch_index == 5
    resumed.run()
    assert resumed.step == 13
    assert resumed_loader.seen == full_loader.seen[5:]
    for a, b in zip(resumed.model_without_ddp.parameters(), full.model_without_ddp.parameters()):
        torch.testing.assert_close(a, b)
    for a, b in zip(resumed.ema.parameters(), full.ema.parameters()):
        torch.testing.assert_close(a, b)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(full.optimizer.param_groups[0]["lr"])


def test_loop_rejects_non_finite_loss(tmp_path: Path) -> None:
    loop, _, _ = _toy_loop(tmp_path, max_iters=2)
    loop.step_fn = lambda model, batch: StepOutput(loss=model(batch[0]).sum() * float("nan"), batch_size=1)
    with pytest.raises(FloatingPointError, match="non-finite"):
        loop.run()


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    # As under torchrun: the launcher (here the test) serves the rendezvous store on a port it
    # holds, and every rank is its client (TORCHELASTIC_USE_AGENT_STORE), so no port is picked
    # free and bound later, where another process may have taken it meanwhile.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True",
                      RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_distributed("gloo", "cpu")
    try:  # the loop and its DDP model go out of scope before cleanup, as in in_process_group
        _ddp_run(rank, info, out_dir)
    finally:
        cleanup(info)
    # cleanup freed the group while the interpreter is alive: no gloo thread is left for
    # interpreter shutdown to tear down (where that can abort the rank)
    wait_until(lambda: not _gloo_threads(), timeout=60)
    Path(out_dir, f"gloo-threads-{rank}.json").write_text(json.dumps(_gloo_threads()))


def _gloo_threads() -> list[str]:
    """This process's gloo threads (the process group's workers, its TCP transport loop)."""
    return [name for name in os_thread_names() if "gloo" in name]


def _ddp_run(rank: int, info: Any, out_dir: str) -> None:
    loop, loader, _ = _toy_loop(Path(out_dir), max_iters=0, epochs=2, ema=False, info=info)
    loop.run()
    params = [p.detach().clone() for p in loop.model_without_ddp.parameters()]
    gathered = [None, None]
    torch.distributed.all_gather_object(gathered, params)
    same = all(torch.equal(a, b) for a, b in zip(*gathered))
    shards = [None, None]
    torch.distributed.all_gather_object(shards, sorted(i for batch in loader.seen[:4] for i in batch))
    if rank == 0:
        Path(out_dir, "ddp.json").write_text(json.dumps({"same_params": same, "disjoint": not set(shards[0]) & set(shards[1]),
                                                         "step": loop.step}))


def test_loop_ddp_two_cpu_processes(tmp_path: Path) -> None:
    """Two gloo ranks, one shard each: parameters stay identical, shards are disjoint, one
    checkpoint holds both ranks' loader positions."""
    import torch.multiprocessing as mp
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, world_size=2, is_master=True, wait_for_workers=False)  # binds a free port and keeps it
    mp.spawn(_ddp_worker, args=(2, store.port, str(tmp_path)), nprocs=2, join=True)
    del store
    result = json.loads((tmp_path / "ddp.json").read_text())
    assert result == {"same_params": True, "disjoint": True, "step": 8}
    assert [json.loads((tmp_path / f"gloo-threads-{rank}.json").read_text()) for rank in range(2)] == [[], []]
    state = load_checkpoint(Checkpointer(tmp_path / "checkpoints").latest())
    assert state["world_size"] == 2 and len(state["loader"]) == 2 and len(state["rng"]) == 2
    records = read_jsonl(tmp_path / "metrics.jsonl", split="train")
    assert records[-1]["step"] == 8 and math.isfinite(records[-1]["loss"])


def test_the_trainers_may_stream_every_family_the_server_serves() -> None:
    pytest.importorskip("grpc")
    from decal.server.pipelines import PIPELINES

    assert set(REMOTE_PIPELINES) == set(PIPELINES)
