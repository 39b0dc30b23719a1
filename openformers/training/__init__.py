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
from openformers.training.schedulers import get_scheduler
from openformers.training.state import TrainerControl, TrainerState
from openformers.training.trainer import Trainer

__all__ = [
    "CallbackHandler", "DefaultFlowCallback", "EarlyStoppingCallback", "EvalPrediction", "PredictionOutput",
    "PrinterCallback", "ProgressCallback", "Trainer", "TrainerCallback", "TrainerControl", "TrainerState",
    "TrainingArguments", "TrainOutput", "get_scheduler",
]
