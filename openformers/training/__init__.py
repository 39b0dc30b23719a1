"""Training: TrainingArguments, Trainer, callbacks, schedulers, checkpoints, reporting."""
from openformers.training.arguments import TrainingArguments
from openformers.training.callbacks import (
    CallbackHandler,
    DefaultFlowCallback,
    EarlyStoppingCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
)
from openformers.training.evaluation import (
    EvalPrediction,
    PredictionOutput,
    TrainOutput,
)
from openformers.training.schedulers import (
    SchedulerType,
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
    get_scheduler,
    get_wsd_schedule,
)
from openformers.training.state import TrainerControl, TrainerState
from openformers.training.trainer import Trainer

__all__ = [
    "CallbackHandler", "DefaultFlowCallback", "EarlyStoppingCallback", "EvalPrediction", "PredictionOutput",
    "PrinterCallback", "ProgressCallback", "Trainer", "TrainerCallback", "TrainerControl", "TrainerState",
    "TrainingArguments", "TrainOutput", "get_scheduler",
    "SchedulerType", "get_constant_schedule", "get_constant_schedule_with_warmup", "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup", "get_inverse_sqrt_schedule", "get_linear_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup", "get_wsd_schedule",
]
