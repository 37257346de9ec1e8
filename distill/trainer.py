"""One training loop for both objectives: the flow-matching teacher and the SnapFlow student.

Reads top to bottom: sample batch -> prefix once -> loss -> backward -> clip -> step ->
schedule -> EMA -> log -> checkpoint. Resume restores weights, optimizer, scheduler, EMA,
RNG streams and step, so a resumed run continues bit for bit on CPU.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from snapflow_distill.data import ChunkDataset, fetch_batch
from snapflow_distill.distributed import DistributedContext
from snapflow_distill.loss import LossTerms, flow_matching_loss, snapflow_loss
from snapflow_distill.schedule import warmup_cosine
from snapflow_ros.errors import ConfigError
from snapflow_ros.flow.time import sample_flow_time
from snapflow_ros.policy.checkpoint import atomic_directory, load_policy, save_policy
from snapflow_ros.policy.contract import FlowPolicy

Objective = Literal["flow_matching", "snapflow"]
TRAINING_STATE = "training_state.pt"


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
    ema_decay: float = 0.0             # > 0 keeps an EMA of the weights and saves it as the policy
    checkpoint_every: int = 500        # periodic checkpoints (0: only the final one)
    log_every: int = 50
    seed: int = 0
    mixed_precision: bool = True       # bf16 autocast on CUDA; ignored on CPU
    gradient_checkpointing: bool = False  # recompute expert activations in backward (large models)

    def __post_init__(self) -> None:
        if self.objective not in ("flow_matching", "snapflow"):
            raise ConfigError(f"objective must be 'flow_matching' or 'snapflow', got {self.objective!r}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    loss: float
    loss_flow_matching: float
    loss_consistency: float
    learning_rate: float
    steps_per_second: float
    eta_seconds: float


def trainable_parameters(policy: FlowPolicy, objective: Objective) -> list[torch.nn.Parameter]:
    """SnapFlow trains the expert side only (backbone frozen); the teacher trains everything
    but phi, which stays zero so the teacher ignores s."""
    if objective == "snapflow":
        trainable = {id(p) for p in policy.expert_parameters()}
    else:
        phi = {id(p) for p in policy.target_time.parameters()}
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

    def forward(self, index: torch.Tensor) -> LossTerms:
        return self.compute(index)


class Trainer:
    def __init__(self, policy: FlowPolicy, dataset: ChunkDataset, config: TrainConfig,
                 output_dir: Path, progress: Callable[[Progress], None] | None = None,
                 distributed: DistributedContext | None = None) -> None:
        self.policy = policy
        self.dataset = dataset
        self.config = config
        self.output_dir = Path(output_dir)
        self.progress = progress
        self.provenance: dict = {}  # written beside the final policy (teacher, data, ...)
        self.device = policy.device
        policy.gradient_checkpointing = config.gradient_checkpointing
        self.parameters = trainable_parameters(policy, config.objective)
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate,
                                           weight_decay=config.weight_decay)
        self.scheduler = warmup_cosine(self.optimizer, config.warmup_steps, config.steps,
                                       config.min_lr_ratio)
        self.ema = [p.detach().clone() for p in self.parameters] if config.ema_decay else None
        self.dist = DistributedContext.from_env() if distributed is None else distributed
        # Rank 0 draws exactly what a single process would; other ranks draw their own streams.
        rank_seed = config.seed + 7919 * self.dist.rank
        self.data_generator = torch.Generator().manual_seed(rank_seed)
        self.loss_generator = torch.Generator().manual_seed(rank_seed + 1)
        self.step = 0
        self.last_progress: Progress | None = None
        self.loss_module: torch.nn.Module | None = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # DDP broadcasts rank 0's weights at construction: every rank starts equal.
            self.loss_module = DistributedDataParallel(_LossModule(self), device_ids=ids)

    # --- one step ------------------------------------------------------------------------
    def loss(self, index: torch.Tensor) -> LossTerms:
        inputs = self.policy.prepare(fetch_batch(self.dataset, index))
        actions, mask = inputs["actions"], inputs["action_mask"]
        autocast = torch.autocast("cuda", dtype=torch.bfloat16,
                                  enabled=self.config.mixed_precision and self.device.type == "cuda")
        with autocast:
            if self.config.objective == "snapflow":
                with torch.no_grad():  # frozen backbone: prefix once per batch, no graph
                    cache = self.policy.embed_prefix(inputs)
                return snapflow_loss(self.policy, cache, actions, mask, self.config.alpha,
                                     self.config.consistency_weight, self.loss_generator)
            cache = self.policy.embed_prefix(inputs)
            noise = torch.randn(actions.shape, generator=self.loss_generator).to(self.device)
            t = sample_flow_time(actions.shape[0], self.loss_generator).to(self.device)
            fm = flow_matching_loss(self.policy, cache, actions, mask, noise, t)
            return LossTerms(fm, fm.detach(), fm.new_zeros(()))

    def train_step(self) -> LossTerms:
        self.policy.train()
        index = torch.randint(len(self.dataset), (self.config.batch_size,), generator=self.data_generator)
        terms = self.loss_module(index) if self.loss_module is not None else self.loss(index)
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
        self.resume()
        main = self.dist.is_main
        metrics = (self.output_dir / "metrics.jsonl").open("a") if main else None
        started, start_step = time.perf_counter(), self.step
        try:
            while self.step < self.config.steps:
                terms = self.train_step()
                if not math.isfinite(terms.total.item()):
                    raise FloatingPointError(f"loss became {terms.total.item()} at step {self.step}")
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

    def save_checkpoint(self) -> Path:
        """Every rank calls this (RNG streams are gathered); rank 0 writes."""
        final = self.output_dir / "checkpoints" / f"step-{self.step:08d}"
        generators = self.dist.gather((self.data_generator.get_state(), self.loss_generator.get_state()))
        if not self.dist.is_main:
            self.dist.barrier()
            return final
        with atomic_directory(final) as tmp:
            save_policy(self.policy, tmp / "policy")
            torch.save({
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema,
                "generators": generators,  # (data, loss) states per rank
                "world_size": self.dist.world_size,
                "train_config": asdict(self.config),
            }, tmp / TRAINING_STATE)
        self.dist.barrier()
        return final

    def resume(self) -> bool:
        checkpoints = sorted((self.output_dir / "checkpoints").glob("step-*"))
        if not checkpoints:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            return False
        latest = checkpoints[-1]
        state = torch.load(latest / TRAINING_STATE, weights_only=False)
        if state["world_size"] != self.dist.world_size:
            raise ConfigError(f"{latest}: written by {state['world_size']} processes, resumed with "
                              f"{self.dist.world_size}; resume with the same world size")
        if state["train_config"] != asdict(self.config):
            changed = {k for k, v in asdict(self.config).items() if state["train_config"].get(k) != v}
            raise ConfigError(f"{latest}: cannot resume with a different configuration (changed: "
                              f"{sorted(changed)}); use a new output directory")
        restored = load_policy(latest / "policy", self.device)
        self.policy.load_state_dict(restored.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.ema = state["ema"]
        data_state, loss_state = state["generators"][self.dist.rank]
        self.data_generator.set_state(data_state)
        self.loss_generator.set_state(loss_state)
        self.step = state["step"]
        return True
