"""Under torchrun each rank works on cuda:LOCAL_RANK with NCCL (gloo without CUDA): from_env sets
the current device, --device auto and a bare cuda map to it. CUDA and torch.distributed are faked,
so no process group starts."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from snapflow_distill.distributed import DistributedContext
from snapflow_distill.synthetic import make_dataset, task_config
from snapflow_distill.trainer import TrainConfig, Trainer
from snapflow_ros.cli.options import device
from snapflow_ros.errors import ConfigError
from snapflow_ros.families.builtin import BuiltinVLA


@pytest.fixture
def torchrun(monkeypatch):
    """Rank 3 of 4, LOCAL_RANK 1; returns the recorded set_device and init_process_group calls."""
    calls = {"set_device": [], "backend": []}
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(calls["backend"]))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls["backend"].append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 3)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls["set_device"].append(index))

    def with_cuda(present: bool) -> dict:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
        return calls

    return with_cuda


def test_with_cuda_each_rank_uses_its_local_gpu_over_nccl(torchrun):
    calls = torchrun(True)
    ctx = DistributedContext.from_env()
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (3, 4, 1)
    assert calls == {"set_device": [1], "backend": ["nccl"]}
    assert ctx.default_device() == torch.device("cuda", 1)
    assert device("auto") == device("cuda") == torch.device("cuda", 1)
    assert device("cuda:0") == torch.device("cuda", 0)  # an explicit index is taken as given
    assert calls["backend"] == ["nccl"]  # initialised once


def test_without_cuda_ranks_use_gloo_on_cpu(torchrun):
    calls = torchrun(False)
    ctx = DistributedContext.from_env()
    assert calls == {"set_device": [], "backend": ["gloo"]}
    assert ctx.default_device() == device("auto") == torch.device("cpu")


def test_a_single_process_starts_no_process_group(torchrun, monkeypatch):
    calls = torchrun(True)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert DistributedContext.from_env() == DistributedContext()
    assert device("cuda") == torch.device("cuda", 0)
    assert calls == {"set_device": [], "backend": []}


def test_trainer_refuses_a_rank_off_its_local_gpu(torchrun, tmp_path):
    torchrun(True)
    policy = BuiltinVLA(task_config(width=16, num_heads=2, num_layers=1))  # on the CPU
    with pytest.raises(ConfigError, match=r"rank 3: the policy is on cpu.*cuda:1"):
        Trainer(policy, make_dataset(8, seed=0)[0], TrainConfig(steps=1), tmp_path,
                distributed=DistributedContext(3, 4, 1))
