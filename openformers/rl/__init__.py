"""Post-training: supervised fine-tuning, reward models, DPO, GRPO and (classic) PPO on the Trainer.

Names, arguments and defaults follow TRL (``from trl import SFTTrainer`` becomes
``from openformers.rl import SFTTrainer``); each trainer subclasses ``openformers.Trainer`` and
adds only its batch preparation and loss.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SFTConfig": "configs", "RewardConfig": "configs", "DPOConfig": "configs", "GRPOConfig": "configs",
    "SFTTrainer": "sft", "RewardTrainer": "reward", "DPOTrainer": "dpo", "GRPOTrainer": "grpo",
    "PPOConfig": "ppo", "PPOTrainer": "ppo", "AdaptiveKLController": "ppo", "FixedKLController": "ppo",
    "AutoModelForCausalLMWithValueHead": "value_head", "ValueHead": "value_head",
    "SFTDataCollator": "data", "PreferenceCollator": "data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"openformers.rl.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'openformers.rl' has no attribute {name!r}")
