"""One training loop for both objectives: the flow-matching teacher and the SnapFlow student.

Reads top to bottom: sample batch -> prefix once -> loss -> backward -> clip -> step ->
schedule -> EMA -> log -> checkpoint. Resume restores weights, optimizer, scheduler, EMA,
RNG streams and step, so a resumed run continues bit for bit on CPU.

A periodic checkpoint, OUTPUT/checkpoints/step-N/, holds no frozen weights and no pickle:
    policy.safetensors          the trained parameters by state_dict name; a teacher trained from
                                scratch (flow_matching) has no checkpoint to come back from, so
                                its whole state_dict (phi, normalisation statistics) instead
    training_state.safetensors  optimizer moments, EMA shadows, each rank's RNG streams
    training_state.json         step, world size, train config, optimizer hyper-parameters,
                                scheduler, and the teacher's path and id (resume checks the hash)
It appears under its final name complete or not at all (a full disk, a kill mid-write): resume
takes the newest complete one and removes what a killed run left half-written.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from snapflow_distill.data import BatchLoader
from snapflow_distill.distributed import DistributedContext
from snapflow_distill.loss import CommittedPrefix, LossTerms, flow_matching_loss, snapflow_loss
from snapflow_distill.schedule import warmup_cosine
from snapflow_ros.data.chunks import ChunkDataset
from snapflow_ros.errors import CheckpointError, ConfigError, TrainingDivergedError
from snapflow_ros.events import ProgressEvent as Progress  # what a progress line carries
from snapflow_ros.files import atomic_directory, read_tensors, reported_write, save_policy, stale_temporaries
from snapflow_ros.flow.time import sample_flow_time
from snapflow_ros.policy.contract import FlowPolicy, RawBatch

Objective = Literal["flow_matching", "snapflow"]
CHECKPOINTS = "checkpoints"
POLICY_TENSORS = "policy.safetensors"
STATE_TENSORS = "training_state.safetensors"
STATE = "training_state.json"
LOW_PRECISION = (torch.bfloat16, torch.float16)
# How a run is executed, not what it computes or logs: a resumed run may change these.
EXECUTION_FIELDS = ("keep_checkpoints", "workers")


@dataclass(frozen=True)
class TrainConfig:
    objective: Objective = "snapflow"  # flow_matching trains a teacher; snapflow distils a student
    steps: int = 2000                  # optimisation steps
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1          # cosine decays to this fraction of the peak rate
    grad_clip: float = 1.0             # max global gradient norm
    alpha: float = 0.5                 # SnapFlow: fraction of samples routed to flow matching
    consistency_weight: float = 0.1    # SnapFlow: lambda
    max_delay: int = 0                 # > 0: committed prefixes of up to this many actions (real-time chunking)
    ema_decay: float = 0.0             # > 0 keeps an EMA of the weights and saves it as the policy
    checkpoint_every: int = 500        # periodic checkpoints (0: only the final one)
    keep_checkpoints: int = 2          # newest periodic checkpoints kept on disk (0: all)
    log_every: int = 50
    seed: int = 0
    mixed_precision: bool = True       # float32 models: bf16 autocast on CUDA, none on CPU
    gradient_checkpointing: bool = False  # recompute expert activations in backward (large models)
    workers: int = 0                   # DataLoader processes decoding frames ahead (0: in the step)
    train_target_time: bool = True     # SnapFlow: train phi; False keeps it zero (the paper's
                                       # "without phi" ablation: the jump cannot see s)

    def __post_init__(self) -> None:
        if self.objective not in ("flow_matching", "snapflow"):
            raise ConfigError(f"objective must be 'flow_matching' or 'snapflow', got {self.objective!r}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_delay < 0:
            raise ConfigError(f"max_delay must be >= 0, got {self.max_delay}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.keep_checkpoints < 0:
            raise ConfigError(f"keep_checkpoints must be >= 0 (0 keeps all), got {self.keep_checkpoints}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0 fetches batches in the training step), "
                              f"got {self.workers}")


def trainable_parameters(policy: FlowPolicy, objective: Objective,
                         train_target_time: bool = True) -> list[torch.nn.Parameter]:
    """SnapFlow trains the expert side only (backbone frozen), phi included unless
    train_target_time is False (an ablation: phi then stays at its zero output); the teacher
    trains everything but phi, which stays zero so the teacher ignores s."""
    phi = {id(p) for p in policy.target_time.parameters()}
    if objective == "snapflow":
        trainable = {id(p) for p in policy.expert_parameters()}
        if not train_target_time:
            trainable -= phi
    else:
        trainable = {id(p) for p in policy.parameters()} - phi
    for p in policy.parameters():
        p.requires_grad_(id(p) in trainable)
    return [p for p in policy.parameters() if p.requires_grad]


class _LossModule(torch.nn.Module):
    """The whole loss as one forward(), so DistributedDataParallel's gradient hooks apply."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.policy = trainer.policy
        self.compute = trainer.loss

    def forward(self, batch: RawBatch) -> LossTerms:
        return self.compute(batch)


class Trainer:
    def __init__(self, policy: FlowPolicy, dataset: ChunkDataset, config: TrainConfig,
                 output_dir: Path, progress: Callable[[Progress], None] | None = None,
                 distributed: DistributedContext | None = None,
                 resumed: Callable[[int, Path], None] | None = None) -> None:
        """resumed(step, checkpoint) is called (main rank) when run() continues from a checkpoint."""
        self.policy = policy
        self.dataset = dataset
        self.config = config
        if config.max_delay >= policy.chunk_size:
            raise ConfigError(f"max_delay {config.max_delay} leaves nothing to predict in chunks of "
                              f"{policy.chunk_size} actions: use at most {policy.chunk_size - 1}")
        self.output_dir = Path(output_dir)
        self.progress = progress
        self.resumed = resumed
        self.resumed_from: Path | None = None  # the checkpoint resume() restored
        self.provenance: dict = {}  # written beside the final policy (teacher, data, ...)
        self.device = policy.device
        self.dist = DistributedContext.from_env() if distributed is None else distributed
        if self.dist.enabled and torch.cuda.is_available() and self.device != self.dist.default_device():
            raise ConfigError(f"rank {self.dist.rank}: the policy is on {self.device}, but under torchrun "
                              f"each rank trains on cuda:LOCAL_RANK ({self.dist.default_device()}); "
                              f"use --device auto or cuda")
        # The flag or the checkpoint's own setting (LeRobot's `gradient_checkpointing: true`).
        policy.gradient_checkpointing = policy.gradient_checkpointing or config.gradient_checkpointing
        self.parameters = trainable_parameters(policy, config.objective, config.train_target_time)
        names = {id(p): name for name, p in policy.named_parameters()}
        self.parameter_names = [names[id(p)] for p in self.parameters]
        # Frozen weights in bf16/fp16 (LeRobot dtype: bfloat16) set the autocast dtype; the trained
        # ones become float32 master weights, since a 2.5e-5 update rounds away in bf16.
        self.low_precision = next((p.dtype for p in policy.parameters()
                                   if not p.requires_grad and p.dtype in LOW_PRECISION), None)
        for p in self.parameters:
            if p.dtype in LOW_PRECISION:
                p.data = p.data.float()
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.scheduler = warmup_cosine(self.optimizer, config.warmup_steps, config.steps,
                                       config.min_lr_ratio)
        self.ema = [p.detach().clone() for p in self.parameters] if config.ema_decay else None
        # Rank 0 draws exactly what a single process would; other ranks draw their own streams.
        rank_seed = config.seed + 7919 * self.dist.rank
        self.data_generator = torch.Generator().manual_seed(rank_seed)
        self.loss_generator = torch.Generator().manual_seed(rank_seed + 1)
        self.batches = BatchLoader(dataset, config.batch_size, self.data_generator, config.workers,
                                   pin_memory=self.device.type == "cuda")
        self.step = 0
        self.last_progress: Progress | None = None
        self.loss_module: torch.nn.Module | None = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # DDP broadcasts rank 0's weights at construction: every rank starts equal.
            self.loss_module = DistributedDataParallel(_LossModule(self), device_ids=ids)

    # --- one step ------------------------------------------------------------------------
    def autocast(self) -> torch.autocast:
        """Low-precision frozen weights: activations in their dtype, on any device (the trained
        float32 layers would otherwise meet bf16 inputs). float32 models: bf16 on CUDA only."""
        if self.low_precision is not None:
            return torch.autocast(self.device.type, dtype=self.low_precision)
        return torch.autocast("cuda", dtype=torch.bfloat16,
                              enabled=self.config.mixed_precision and self.device.type == "cuda")

    def loss(self, batch: RawBatch) -> LossTerms:
        inputs = self.policy.prepare(batch)
        actions, mask = inputs["actions"], inputs["action_mask"]
        with self.autocast():
            if self.config.objective == "snapflow":
                with torch.no_grad():  # frozen backbone: prefix once per batch, no graph
                    cache = self.policy.embed_prefix(inputs)
                return snapflow_loss(self.policy, cache, actions, mask, self.config.alpha,
                                     self.config.consistency_weight, self.loss_generator, self.config.max_delay)
            cache = self.policy.embed_prefix(inputs)
            noise = torch.randn(actions.shape, generator=self.loss_generator).to(self.device)
            t = sample_flow_time(actions.shape[0], self.loss_generator).to(self.device)
            prefix = (CommittedPrefix.sample(actions, self.config.max_delay, self.loss_generator)
                      if self.config.max_delay > 0 else None)
            fm = flow_matching_loss(self.policy, cache, actions, mask, noise, t, prefix)
            return LossTerms(fm, fm.detach(), fm.new_zeros(()))

    def train_step(self) -> LossTerms:
        self.policy.train()
        batch = self.batches.next()
        terms = self.loss_module(batch) if self.loss_module is not None else self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                for shadow, p in zip(self.ema, self.parameters):
                    shadow.lerp_(p.detach(), 1.0 - self.config.ema_decay)
        self.step += 1
        return terms

    # --- the loop ------------------------------------------------------------------------
    def run(self) -> Path:
        """Trains to config.steps (resuming from the newest checkpoint) and returns the final
        policy directory, output_dir/policy."""
        main = self.dist.is_main
        if self.resume() and main and self.resumed:
            self.resumed(self.step, self.resumed_from)
        metrics = (self.output_dir / "metrics.jsonl").open("a") if main else None
        started, start_step = time.perf_counter(), self.step
        try:
            while self.step < self.config.steps:
                terms = self.train_step()
                if not math.isfinite(terms.total.item()):
                    raise TrainingDivergedError(f"loss became {terms.total.item()} at step {self.step}; "
                                                "nothing from this step on is saved (try a lower --lr)")
                if main and (self.step % self.config.log_every == 0 or self.step == self.config.steps):
                    rate = (self.step - start_step) / max(time.perf_counter() - started, 1e-9)
                    report = Progress(self.step, self.config.steps, terms.total.item(),
                                      terms.flow_matching.item(), terms.consistency.item(),
                                      self.scheduler.get_last_lr()[0], rate,
                                      (self.config.steps - self.step) / max(rate, 1e-9))
                    self.last_progress = report
                    metrics.write(json.dumps(asdict(report)) + "\n")
                    metrics.flush()
                    if self.progress:
                        self.progress(report)
                every = self.config.checkpoint_every
                if every and self.step % every == 0 and self.step < self.config.steps:
                    self.save_checkpoint()
        finally:
            self.batches.close()
            if metrics is not None:
                metrics.close()
        if main:
            self.save_policy()
        self.dist.barrier()
        return self.output_dir / "policy"

    # --- checkpoints ---------------------------------------------------------------------
    def _policy_for_saving(self) -> FlowPolicy:
        if self.ema is None:
            return self.policy
        averaged = copy.deepcopy(self.policy)
        trainable = [p for p in averaged.parameters() if p.requires_grad]
        with torch.no_grad():
            for p, shadow in zip(trainable, self.ema):
                p.copy_(shadow)
        return averaged

    def save_policy(self) -> Path:
        provenance = {"objective": self.config.objective, "steps": self.step,
                      "train_config": asdict(self.config),
                      "final_metrics": asdict(self.last_progress) if self.last_progress else None,
                      **self.provenance}
        return save_policy(self._policy_for_saving(), self.output_dir / "policy", provenance)

    def _policy_tensors(self) -> dict[str, torch.Tensor]:
        """The policy tensors a checkpoint holds, by state_dict name (see the module docstring)."""
        if self.config.objective == "snapflow":
            return dict(zip(self.parameter_names, self.parameters))
        return self.policy.state_dict()

    def save_checkpoint(self) -> Path:
        """Every rank calls this (RNG streams are gathered); rank 0 writes step-N/, then deletes
        all but the newest keep_checkpoints."""
        final = self.output_dir / CHECKPOINTS / f"step-{self.step:08d}"
        generators = self.dist.gather((self.data_generator.get_state(), self.loss_generator.get_state()))
        if not self.dist.is_main:
            self.dist.barrier()
            return final
        optimizer = self.optimizer.state_dict()
        tensors = {f"optimizer/{self.parameter_names[i]}/{key}": value
                   for i, moments in optimizer["state"].items() for key, value in moments.items()}
        if self.ema is not None:
            tensors |= {f"ema/{name}": shadow for name, shadow in zip(self.parameter_names, self.ema)}
        for rank, (data_state, loss_state) in enumerate(generators):
            tensors |= {f"rng/{rank}/data": data_state, f"rng/{rank}/loss": loss_state}
        state = {"step": self.step, "world_size": self.dist.world_size,
                 "train_config": asdict(self.config),
                 "teacher": self.provenance.get("teacher"), "teacher_id": self.provenance.get("teacher_id"),
                 "optimizer_param_groups": optimizer["param_groups"],
                 "scheduler": self.scheduler.state_dict()}
        with atomic_directory(final) as tmp:  # a failed write leaves the previous checkpoints as they were
            _save_tensors(self._policy_tensors(), tmp / POLICY_TENSORS, final / POLICY_TENSORS)
            _save_tensors(tensors, tmp / STATE_TENSORS, final / STATE_TENSORS)
            with reported_write(final / STATE):
                (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n")
        if self.config.keep_checkpoints:
            for old in sorted(final.parent.glob("step-*"))[:-self.config.keep_checkpoints]:
                shutil.rmtree(old)
        self.dist.barrier()
        return final

    def resume(self) -> bool:
        """Restores the newest checkpoint into this trainer's policy, optimizer, scheduler, EMA and
        RNG streams; refuses one of another world size, configuration or teacher."""
        if self.dist.is_main:  # the one writer: what a killed run left half-written goes
            for leftover in stale_temporaries(self.output_dir / CHECKPOINTS) + stale_temporaries(self.output_dir):
                shutil.rmtree(leftover, ignore_errors=True)
        checkpoints = sorted((self.output_dir / CHECKPOINTS).glob("step-*"))
        if not checkpoints:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            return False
        latest = checkpoints[-1]
        state = _read_json(latest / STATE)
        if state["world_size"] != self.dist.world_size:
            raise ConfigError(f"{latest}: written by {state['world_size']} processes, resumed with "
                              f"{self.dist.world_size}; resume with the same world size")
        config = asdict(self.config)
        # A field added since the checkpoint was written had its default value then.
        saved = asdict(TrainConfig()) | state["train_config"]
        changed = {k for k, v in config.items() if k not in EXECUTION_FIELDS and saved.get(k) != v}
        if changed:
            raise ConfigError(f"{latest}: cannot resume with a different configuration (changed: "
                              f"{sorted(changed)}); use a new output directory")
        teacher_id = self.provenance.get("teacher_id")
        if _weights_hash(state["teacher_id"]) != _weights_hash(teacher_id):
            raise ConfigError(f"{latest}: distilled from teacher {state['teacher']} ({state['teacher_id']}), "
                              f"resumed with {self.provenance.get('teacher')} ({teacher_id}); resume with "
                              f"the same teacher or use a new output directory")
        _load_into(self._policy_tensors(), read_tensors(latest / POLICY_TENSORS), latest / POLICY_TENSORS)
        tensors = read_tensors(latest / STATE_TENSORS)
        index = {name: i for i, name in enumerate(self.parameter_names)}
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                name, field = key.removeprefix("optimizer/").rsplit("/", 1)
                moments.setdefault(index[name], {})[field] = value
        self.optimizer.load_state_dict({"state": moments, "param_groups": state["optimizer_param_groups"]})
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema = [tensors[f"ema/{name}"].to(self.device) for name in self.parameter_names]
        self.data_generator.set_state(tensors[f"rng/{self.dist.rank}/data"])
        self.loss_generator.set_state(tensors[f"rng/{self.dist.rank}/loss"])
        self.step = state["step"]
        self.resumed_from = latest
        return True


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, final: Path) -> None:
    """Writes `path`; a failure names `final`, where the file would have appeared."""
    with reported_write(final):
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: {path.name} missing")
    return json.loads(path.read_text())


def _weights_hash(checkpoint_id: str | None) -> str | None:
    """The hash part of checkpoint_id's <directory name>@<hash>: a moved teacher is the same one."""
    return checkpoint_id.rsplit("@", 1)[-1] if checkpoint_id else None


def _load_into(targets: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], source: Path) -> None:
    """Copies `saved` into the live tensors `targets` in place; names and shapes must match exactly."""
    missing = sorted(set(targets) - set(saved))
    unexpected = sorted(set(saved) - set(targets))
    mismatched = sorted(f"{k} {tuple(saved[k].shape)} vs {tuple(targets[k].shape)}"
                        for k in set(targets) & set(saved) if saved[k].shape != targets[k].shape)
    if missing or unexpected or mismatched:
        raise CheckpointError(f"{source}: does not match the policy being trained: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]}, shape-mismatched {mismatched[:8]}")
    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(saved[name])
