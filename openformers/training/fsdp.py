"""FSDP2 for the Trainer: the implementation lives in :mod:`openformers.distributed.fsdp`, shared with the Accelerator."""
from openformers.distributed.fsdp import *  # noqa: F401,F403
from openformers.distributed.fsdp import (  # noqa: F401
    OPTIONS,
    SHARDED_MODEL_NAME,
    STRATEGIES,
    _block_modules,
    _by_size,
    _read_config,
    FsdpPlan,
    architecture_name,
    full_model_state,
    full_optimizer_state,
    is_sharded,
    load_full_model_state,
    load_optimizer_state,
    load_sharded_model,
    load_sharded_optimizer,
    plan_from_args,
    save_sharded_model,
    save_sharded_optimizer,
    shard_model,
)
