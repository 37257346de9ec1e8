"""The input/output path of a LeRobot checkpoint, without its weights: the checkpoint's own
processor pipelines plus the policy class's own image/state/action preparation. Used by the
adapter (training, evaluation, serving) and by ONNX deployments alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol

import torch

from snapflow_ros.errors import CheckpointError, InputError
from snapflow_ros.policy.contract import RawBatch, example_instruction

TOKENIZER = "tokenizer"                            # bundled tokenizer: the checkpoint loads offline
VLM = "vlm"                                        # SmolVLA: bundled VLM config + processor files
PREPROCESSOR = "policy_preprocessor.json"
POSTPROCESSOR = "policy_postprocessor.json"
IMAGE_PREFIX = "observation.images."


class _PolicyStandIn:
    """What LeRobot's image/state/action preparation methods read from `self`: the config and
    the device of the parameters. Lets the processor run them without building the model."""

    def __init__(self, config: Any, device: torch.device) -> None:
        self.config = config
        self._probe = torch.empty(0, device=device)

    def parameters(self):
        yield self._probe


class FamilyClass(Protocol):
    """What the processor uses of an adapter class (adapter.LeRobotAdapter and its subclasses),
    named here so that the adapter imports the processor and not the other way round."""

    family: str

    def policy_class(self) -> type: ...

    def model_inputs(self, policy: Any, batch: dict[str, Any]) -> dict[str, Any]: ...


class LeRobotProcessor:
    """A LeRobot checkpoint's input/output path: its processor pipelines plus the policy class's
    own image/state/action preparation; no weights."""

    def __init__(self, adapter_class: FamilyClass, config: Any, preprocessor: Any,
                 postprocessor: Any, tokenizer_dir: Path | None) -> None:
        self.adapter_class = adapter_class
        self.config = config
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.tokenizer_dir = tokenizer_dir
        self.cameras = tuple(k[len(IMAGE_PREFIX):] for k in config.image_features)
        self.action_dim = int(config.output_features["action"].shape[0])

    def example_batch(self, batch_size: int = 1, seed: int = 0) -> RawBatch:
        g = torch.Generator().manual_seed(seed)
        features = self.config.input_features
        images = {}
        for camera in self.cameras:
            _, height, width = features[f"{IMAGE_PREFIX}{camera}"].shape
            images[camera] = torch.randint(0, 256, (batch_size, height, width, 3), generator=g,
                                           dtype=torch.uint8)
        state_dim = features["observation.state"].shape[0]
        return RawBatch(images=images, instruction=[example_instruction(seed)] * batch_size,
                        state=torch.randn(batch_size, state_dim, generator=g))

    def prompt_tokens(self, batch: RawBatch) -> tuple[list[int], int]:
        """Tokens each sample's prompt takes before truncation, and tokenizer_max_length: the
        checkpoint's own steps up to its tokenizer build the prompt (pi0.5 writes the state into it)."""
        from lerobot.processor.tokenizer_processor import TokenizerProcessorStep

        lerobot_batch = self._lerobot_batch(batch)
        for step, transition in zip(self.preprocessor.steps, self.preprocessor.step_through(lerobot_batch)):
            if isinstance(step, TokenizerProcessorStep):
                ids = step.input_tokenizer(step.get_task(transition), truncation=False, padding=False)["input_ids"]
                return [len(row) for row in ids], step.max_length
        raise CheckpointError(f"the {self.adapter_class.family} preprocessor has no tokenizer step")

    def prepare(self, batch: RawBatch, device: torch.device) -> dict[str, Any]:
        """RawBatch -> LeRobot batch -> the checkpoint's own preprocessor -> the policy class's
        own image/state/action preparation. Training, export and serving all pass here."""
        processed = self.preprocessor(self._lerobot_batch(batch))
        stand_in = _PolicyStandIn(self.config, torch.device(device))
        inputs = self.adapter_class.model_inputs(stand_in, processed)
        if "actions" in batch:
            # normalised, padded to max_action_dim
            inputs["actions"] = self.adapter_class.policy_class().prepare_action(stand_in, processed)
            pad = processed.get("action_is_pad")
            inputs["action_mask"] = (torch.ones(inputs["actions"].shape[:2], dtype=torch.bool,
                                                device=inputs["actions"].device) if pad is None else ~pad)
        return inputs

    def _lerobot_batch(self, batch: RawBatch) -> dict[str, Any]:
        missing = [c for c in self.cameras if c not in batch["images"]]
        if missing:
            raise InputError(f"images for cameras {missing} missing (got {sorted(batch['images'])})")
        lerobot_batch: dict[str, Any] = {
            f"{IMAGE_PREFIX}{c}": batch["images"][c].permute(0, 3, 1, 2).float() / 255.0
            for c in self.cameras
        }
        state = torch.as_tensor(batch["state"], dtype=torch.float32)
        expected = tuple(self.config.input_features["observation.state"].shape)
        if tuple(state.shape[1:]) != expected:
            raise InputError(f"state has {tuple(state.shape[1:])} values per sample, the "
                             f"{self.adapter_class.family} checkpoint expects {expected} (observation.state)")
        lerobot_batch["observation.state"] = state
        lerobot_batch["task"] = list(batch["instruction"])
        if "actions" in batch:
            lerobot_batch["action"] = torch.as_tensor(batch["actions"], dtype=torch.float32)
            if lerobot_batch["action"].shape[-1] != self.action_dim:
                raise InputError(f"actions have {lerobot_batch['action'].shape[-1]} dims, the "
                                 f"{self.adapter_class.family} checkpoint expects {self.action_dim}")
            mask = batch.get("action_mask")
            if mask is not None:
                lerobot_batch["action_is_pad"] = ~torch.as_tensor(mask, dtype=torch.bool)
        return lerobot_batch

    def unnormalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.postprocessor(actions[..., : self.action_dim])

    def normalization_stats(self) -> dict[str, dict[str, list[float]]]:
        """The statistics of the preprocessor's normalizer step (feature -> stat -> values)."""
        for step in self.preprocessor.steps:
            stats = getattr(step, "_tensor_stats", None)
            if stats:
                return {feature: {k: torch.as_tensor(v).flatten().tolist() for k, v in values.items()}
                        for feature, values in stats.items()}
        return {}

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        self.config.save_pretrained(directory)
        self.preprocessor.save_pretrained(directory)
        self.postprocessor.save_pretrained(directory)
        if self.tokenizer_dir is not None:
            shutil.copytree(self.tokenizer_dir, directory / TOKENIZER)

    @classmethod
    def load(cls, adapter_class: FamilyClass, directory: Path) -> LeRobotProcessor:
        from lerobot.configs.policies import PreTrainedConfig

        adapter_class.policy_class()  # registers the config type
        config = PreTrainedConfig.from_pretrained(directory)
        tokenizer_dir = directory / TOKENIZER if (directory / TOKENIZER).is_dir() else None
        pre, post = load_processors(directory, "cpu", tokenizer_dir)
        static_token_padding(pre)
        return cls(adapter_class, config, pre, post, tokenizer_dir)


def hub_names(directory: Path, config: Any) -> dict[str, str]:
    """What a checkpoint would fetch from the hub: its tokenizer (policy_preprocessor.json) and,
    for SmolVLA, its VLM (config.vlm_model_name)."""
    names: dict[str, str] = {}
    try:
        steps = json.loads((Path(directory) / PREPROCESSOR).read_text()).get("steps", [])
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{directory / PREPROCESSOR}: unreadable ({error})") from None
    for step in steps:
        if step.get("registry_name") == "tokenizer_processor" and step.get("config", {}).get("tokenizer_name"):
            names[TOKENIZER] = step["config"]["tokenizer_name"]
    if getattr(config, "vlm_model_name", None):
        names[VLM] = config.vlm_model_name
    return names


def hf_cache_snapshot(name: str) -> Path | None:
    """The local Hugging Face cache's copy of repository `name`, if any (never downloads)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or not a repository name at all
        return None


def offline_files(directory: Path, needed: tuple[str, ...], names: dict[str, str],
                  given: Path | None) -> dict[str, Path]:
    """Where each of `needed` (tokenizer, SmolVLA's vlm) comes from, without any download: the
    checkpoint's bundled copy, else `given`, else the local Hugging Face cache. Every student is
    written with these bundled, so it loads offline wherever it goes."""
    directory = Path(directory)
    found: dict[str, Path] = {}
    for name in needed:
        if (directory / name).is_dir():
            found[name] = directory / name
        elif given is not None:
            if not given.is_dir():
                raise CheckpointError(f"--tokenizer {given}: not a directory")
            found[name] = given
        elif name in names and (cached := hf_cache_snapshot(names[name])) is not None:
            found[name] = cached
        else:
            wanted = names.get(name, "its tokenizer")
            raise CheckpointError(
                f"{directory}: needs {wanted!r} ({'tokenizer' if name == TOKENIZER else 'VLM config and processor'}), "
                f"which is neither bundled as {directory / name}/ nor in the local Hugging Face cache, and "
                f"nothing is downloaded here. Copy it there (e.g. `huggingface-cli download {wanted}` on a "
                f"machine with network, then copy ~/.cache/huggingface), or pass --tokenizer DIR.")
    return found


def static_token_padding(preprocessor: Any) -> None:
    """Instruction tokens padded to the checkpoint's tokenizer_max_length (with the mask), as pi0
    and pi0.5 already do: SmolVLA pads to the longest in the batch, which an exported graph of
    fixed shape cannot take. Padding is masked out, so the actions do not change."""
    from lerobot.processor.tokenizer_processor import TokenizerProcessorStep

    for step in preprocessor.steps:
        if isinstance(step, TokenizerProcessorStep):
            step.padding = "max_length"


def load_processors(directory: Path, device: str, tokenizer_dir: Path | None) -> tuple[Any, Any]:
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import (
        policy_action_to_transition,
        transition_to_policy_action,
    )

    overrides: dict[str, dict] = {"device_processor": {"device": device}}
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        overrides["tokenizer_processor"] = {"tokenizer": AutoTokenizer.from_pretrained(tokenizer_dir)}
    try:
        pre = PolicyProcessorPipeline.from_pretrained(directory, config_filename=PREPROCESSOR,
                                                      overrides=overrides)
        post = PolicyProcessorPipeline.from_pretrained(
            directory, config_filename=POSTPROCESSOR, to_transition=policy_action_to_transition,
            to_output=transition_to_policy_action)
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{directory}: processors could not be loaded ({error}). A tokenizer that is not "
            f"cached locally can be bundled as {directory / TOKENIZER}/") from None
    return pre, post
