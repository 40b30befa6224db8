"""What the trainer tests share: a quiet tiny configuration, a hook that records the loader's
position and the loss after every step, the checks of an exact resume, and a two-rank run under
torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from decal.trainers.common.checkpoint import load_checkpoint
from decal.trainers.common.config import deep_merge, load_config
from decal.trainers.common.loop import Hook, StepOutput, TrainLoop

#: Run options of a test: no progress bar, no TensorBoard, a metrics line every step.
QUIET = {"progress": False, "tensorboard": False, "log_every": 1}

REPO = Path(__file__).resolve().parents[1]


def torchrun(*train_args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 -m decal.trainers.cli train <train_args>``
    (gloo, one thread per rank, no progress bar, a metrics line every step), asserted to end
    with exit code 0. ``--standalone``: torchrun binds its rendezvous store to a free port
    itself and keeps it, where a port picked free here and handed over could be taken by
    another process before torchrun binds it."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "decal.trainers.cli", "train", *train_args,
        "--no-progress", "--set", "run.torch_threads=1", "--set", "run.log_every=1",
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                               timeout=300)  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def tiny_config(config_type: type, presets: dict[str, Any], out_dir: Path, **sections: Any) -> Any:
    """``presets["tiny"]`` as a ``config_type``, quiet, into ``out_dir``, plus ``sections``."""
    base = deep_merge(presets["tiny"], {"run": {"out_dir": str(out_dir), **QUIET}})
    return load_config(config_type, presets={"test": base}, preset="test", updates=sections)


class PositionRecorder(Hook):
    """The loader position and loss after every step (not saved in checkpoints)."""

    name = "positions"

    def __init__(self) -> None:
        self.positions: list[dict] = []
        self.losses: list[float] = []

    def after_step(self, loop: TrainLoop, output: StepOutput) -> None:
        self.positions.append(dict(loop.loader.state_dict()))
        self.losses.append(float(output.loss.detach()))



def run_and_resume(
    train: Callable[..., dict], tiny: Callable[..., Any], tmp_path: Path, common: dict[str, Any]
) -> tuple[dict, dict, dict]:
    """``train`` the config ``tiny(tmp_path / "full", **common)`` to its end, then again from
    its step-2 checkpoint, and check what every trainer's resume must give: the checkpoint
    holds step 2 and the loader position after it; the resumed run ends at step 5 with the
    same batches, in order, and the same losses. Returns (full run, resumed run, checkpoint)."""
    full_hook, resumed_hook = PositionRecorder(), PositionRecorder()
    full = train(tiny(tmp_path / "full", **common), hooks=[full_hook])
    checkpoint = tmp_path / "full" / "checkpoints" / "checkpoint_00000002.pt"
    state = load_checkpoint(checkpoint)
    assert state["step"] == 2 and state["loader"][0] == {**full_hook.positions[1], "seed": 0, "shard_id": 0, "num_shards": 1}
    resumed = train(tiny(tmp_path / "resumed", **deep_merge(common, {"run": {"resume": str(checkpoint)}})), hooks=[resumed_hook])
    assert resumed["resumed_from"] == str(checkpoint) and resumed["step"] == 5
    assert resumed_hook.positions == full_hook.positions[2:]  # the same batches, in order
    np.testing.assert_allclose(resumed_hook.losses, full_hook.losses[2:], rtol=1e-3, atol=1e-4)
    return full, resumed, state


def assert_same_weights(a: Any, b: Any) -> None:
    """The two train loops' model weights and EMA weights agree (to float tolerance)."""
    for (name, p), q in zip(a.model_without_ddp.state_dict().items(), b.model_without_ddp.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)
    for p, q in zip(a.ema.state_dict().values(), b.ema.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


class FirstBatchRecorder(PositionRecorder):
    """:class:`PositionRecorder` that also keeps the first batch the step function gets."""

    def __init__(self) -> None:
        super().__init__()
        self.first_batch: Any = None

    def before_train(self, loop: TrainLoop) -> None:
        step_fn = loop.step_fn

        def recording(model: Any, batch: Any) -> StepOutput:
            if self.first_batch is None:
                self.first_batch = batch
            return step_fn(model, batch)

        loop.step_fn = recording


def assert_remote_trains_like_local(
    train: Callable[..., dict],
    tiny: Callable[..., Any],
    tmp_path: Path,
    datasets: dict[str, tuple[Any, Path]],
    local_data: dict[str, Any],
    common: dict[str, Any],
) -> dict:
    """Train ``tiny(..., data=local_data, **common)`` on the local loader, then the same job
    with ``--remote`` against an in-process server of ``datasets`` (its first one the
    training set), and check: the remote run used a ``RemoteLoader``, got the same first
    batch bit for bit, the same positions, finite losses equal to the local ones. Returns the
    remote run's result."""
    from server_helpers import assert_same, make_config, running_server

    local_hook, remote_hook = FirstBatchRecorder(), FirstBatchRecorder()
    train(tiny(tmp_path / "local", data=local_data, **common), hooks=[local_hook])
    with running_server(make_config(datasets)) as server:
        remote = {"remote": f"127.0.0.1:{server.grpc_port}", "remote_dataset": next(iter(datasets))}
        result = train(tiny(tmp_path / "remote", data=remote, **common), hooks=[remote_hook])
    assert type(result["loop"].loader).__name__ == "RemoteLoader"
    assert remote_hook.first_batch is not None
    assert_same(remote_hook.first_batch, local_hook.first_batch)
    assert [p["batch_index"] for p in remote_hook.positions] == [p["batch_index"] for p in local_hook.positions]
    assert np.all(np.isfinite(remote_hook.losses)) and len(remote_hook.losses) == len(local_hook.losses) > 0
    np.testing.assert_allclose(remote_hook.losses, local_hook.losses, rtol=1e-4, atol=1e-5)
    return result
