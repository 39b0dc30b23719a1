"""Configs of the post-training trainers: TrainingArguments plus TRL's field names and defaults.

TRL changes a few Trainer defaults (``logging_steps=10``, ``gradient_checkpointing=True`` and a
smaller learning rate per method); they are kept, so a TRL script behaves the same here. bf16
is left off by default: on a CPU without fast bf16 it is slower, and users turn it on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from openformers.training.arguments import TrainingArguments


@dataclass(init=False)
class _TRLArguments(TrainingArguments):
    """TrainingArguments with TRL's base defaults (``logging_steps=10``, gradient checkpointing on)."""

    logging_steps: float = 10
    gradient_checkpointing: bool = True
    model_init_kwargs: dict[str, Any] | None = None
    dataset_num_proc: int | None = None
    pad_token: str | None = None


@dataclass(init=False)
class SFTConfig(_TRLArguments):
    """Supervised fine-tuning: ``dataset_text_field``, ``max_length``, ``packing``, loss masks."""

    learning_rate: float = 2e-5
    dataset_text_field: str = "text"
    dataset_kwargs: dict[str, Any] | None = None
    eos_token: str | None = None
    max_length: int | None = 1024
    truncation_mode: str = "keep_start"
    shuffle_dataset: bool = False
    packing: bool = False
    packing_strategy: str = "bfd"
    padding_free: bool = False
    pad_to_multiple_of: int | None = None
    eval_packing: bool | None = None
    completion_only_loss: bool | None = None
    assistant_only_loss: bool = False
    loss_type: str = "nll"
    chat_template_path: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.truncation_mode not in ("keep_start", "keep_end"):
            raise ValueError(f"truncation_mode={self.truncation_mode!r} must be 'keep_start' or 'keep_end'")
        if self.packing_strategy not in ("bfd", "wrapped"):
            raise ValueError(f"packing_strategy={self.packing_strategy!r} must be 'bfd' or 'wrapped'")
        if self.loss_type != "nll":
            raise ValueError(f"loss_type={self.loss_type!r}: SFTConfig supports 'nll'")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 or None, got {self.max_length}")


@dataclass(init=False)
class RewardConfig(_TRLArguments):
    """Reward modelling on chosen/rejected pairs."""

    learning_rate: float = 1e-4
    disable_dropout: bool = True
    eos_token: str | None = None
    max_length: int | None = 1024
    pad_to_multiple_of: int | None = None
    center_rewards_coefficient: float | None = None
    chat_template_path: str | None = None


DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


@dataclass(init=False)
class DPOConfig(_TRLArguments):
    """Direct preference optimisation."""

    learning_rate: float = 1e-6
    disable_dropout: bool = True
    max_length: int | None = 1024
    truncation_mode: str = "keep_start"
    pad_to_multiple_of: int | None = None
    precompute_ref_log_probs: bool = False
    precompute_ref_batch_size: int | None = None
    loss_type: Any = field(default_factory=lambda: ["sigmoid"])
    loss_weights: list[float] | None = None
    label_smoothing: float = 0.0
    beta: float = 0.1
    padding_value: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        bad = [t for t in self.loss_type if t not in DPO_LOSS_TYPES]
        if bad:
            raise ValueError(f"DPOConfig loss_type {bad} not supported; choose from {DPO_LOSS_TYPES}")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} entries for {len(self.loss_type)} loss types")
        if "robust" in self.loss_type and not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"loss_type='robust' needs 0 <= label_smoothing < 0.5, got {self.label_smoothing}")
        if self.beta <= 0 and "ipo" in self.loss_type:
            raise ValueError("loss_type='ipo' needs beta > 0")


GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


@dataclass(init=False)
class GRPOConfig(_TRLArguments):
    """Group relative policy optimisation with in-process sampling."""

    learning_rate: float = 1e-6
    disable_dropout: bool = False
    remove_unused_columns: bool = False
    num_generations: int = 8
    max_prompt_length: int | None = 512
    max_completion_length: int = 256
    generation_batch_size: int | None = None
    steps_per_generation: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    generation_kwargs: dict[str, Any] | None = None
    beta: float = 0.0
    num_iterations: int = 1
    epsilon: float = 0.2
    epsilon_high: float | None = None
    delta: float | None = None
    use_bias_correction_kl: bool = True
    reward_weights: list[float] | None = None
    scale_rewards: Any = "group"
    loss_type: str = "dapo"
    mask_truncated_completions: bool = False
    log_completions: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(f"GRPOConfig loss_type={self.loss_type!r} not supported; choose from {GRPO_LOSS_TYPES}")
        if self.scale_rewards is True:
            self.scale_rewards = "group"
        elif self.scale_rewards is False:
            self.scale_rewards = "none"
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards={self.scale_rewards!r} must be 'group', 'batch' or 'none'")
        if self.num_generations < 2:
            raise ValueError("GRPO needs num_generations >= 2: advantages compare completions of one prompt")
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon
        if not isinstance(self.num_iterations, int) or self.num_iterations < 1:
            raise ValueError(f"num_iterations={self.num_iterations!r} must be an integer >= 1 (the optimizer steps "
                             "taken on each batch of rollouts)")
