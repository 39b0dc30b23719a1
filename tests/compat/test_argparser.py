"""HfArgumentParser fills our TrainingArguments (and user dataclasses) as the reference's does."""
import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Optional

import pytest

from openformers import HfArgumentParser, TrainingArguments


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "model folder"})
    cache_dir: Optional[str] = None
    use_fast_tokenizer: bool = field(default=True, metadata={"help": "fast tokenizer"})
    freeze: bool = False
    layers: list[int] = field(default_factory=lambda: [1, 2])
    mode: Literal["a", "b"] = "a"


class Color(Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class DataArguments:
    max_seq_length: int = 128
    color: Color = Color.RED
    ratio: Optional[float] = None


def _common_fields(ours, theirs):
    ours_d = {f.name: getattr(ours, f.name) for f in dataclasses.fields(ours)}
    theirs_d = {f.name: getattr(theirs, f.name) for f in dataclasses.fields(theirs)}
    shared = sorted(set(ours_d) & set(theirs_d))
    assert len(shared) > 80
    return shared, ours_d, theirs_d


def _norm(value):
    value = getattr(value, "value", value)  # enums of the reference
    return value


CLI = ["--output_dir", "out", "--learning_rate", "3e-4", "--num_train_epochs", "2", "--per_device_train_batch_size", "4",
       "--do_train", "--do-eval", "--eval_strategy", "steps", "--eval_steps", "5", "--logging_steps", "5",
       "--warmup_steps", "3", "--seed", "7", "--lr_scheduler_type", "cosine", "--weight_decay", "0.01",
       "--gradient_accumulation_steps", "2", "--save_total_limit", "2", "--bf16", "false",
       "--label_names", "labels", "start_positions", "--report_to", "none", "--no_dataloader_pin_memory",
       "--max_grad_norm", "0.5", "--save_strategy", "steps", "--save_steps", "10", "--logging_first_step", "true"]


def test_command_line_matches_reference(monkeypatch):
    import transformers

    ours = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(args=CLI, look_for_args_file=False)[0]
    theirs = transformers.HfArgumentParser(transformers.TrainingArguments).parse_args_into_dataclasses(
        args=CLI, look_for_args_file=False)[0]
    shared, ours_d, theirs_d = _common_fields(ours, theirs)
    for name in ("learning_rate", "num_train_epochs", "do_train", "do_eval", "eval_steps", "seed", "label_names",
                 "dataloader_pin_memory", "gradient_accumulation_steps", "logging_first_step", "max_grad_norm"):
        assert name in shared
    different = {n: (ours_d[n], theirs_d[n]) for n in shared
                 if _norm(ours_d[n]) != _norm(theirs_d[n]) and n not in _DERIVED}
    assert not different


# fields whose value both libraries derive differently from the same input
_DERIVED = {
    "logging_dir",  # transformers 5 leaves it None; the run's TensorBoard folder is filled in here
    "report_to",  # [] here, "none" there: both mean no reporting
    "disable_tqdm",  # depends on the environment (CI) on both sides
    "local_rank", "run_name", "fsdp", "fsdp_config", "lr_scheduler_kwargs", "hub_token", "optim_args",
    "gradient_checkpointing_kwargs", "evaluation_strategy", "no_cuda", "greater_is_better",
    "half_precision_backend", "ddp_backend", "torch_compile_backend", "torch_compile_mode",
    "dataloader_prefetch_factor", "hub_private_repo",
    "optim",  # the default differs: adamw_torch here, adamw_torch_fused there (the same update on CPU)
}


def test_json_file_matches_reference(tmp_path):
    import transformers

    data = {"output_dir": str(tmp_path / "out"), "learning_rate": 1e-3, "num_train_epochs": 1.5,
            "per_device_eval_batch_size": 16, "eval_strategy": "epoch", "save_strategy": "epoch",
            "load_best_model_at_end": True, "metric_for_best_model": "accuracy", "warmup_steps": 2,
            "label_smoothing_factor": 0.1, "report_to": "none", "seed": 3}
    path = tmp_path / "args.json"
    path.write_text(json.dumps(data))
    ours = HfArgumentParser(TrainingArguments).parse_json_file(path)[0]
    theirs = transformers.HfArgumentParser(transformers.TrainingArguments).parse_json_file(str(path))[0]
    shared, ours_d, theirs_d = _common_fields(ours, theirs)
    for key in data:
        if key in shared and key != "report_to":
            assert _norm(ours_d[key]) == _norm(theirs_d[key]), key
    assert ours.greater_is_better is theirs.greater_is_better is True
    different = {n: (ours_d[n], theirs_d[n]) for n in shared
                 if _norm(ours_d[n]) != _norm(theirs_d[n]) and n not in _DERIVED}
    assert not different


def test_user_dataclasses_cli_yaml_and_dict(tmp_path):
    parser = HfArgumentParser((ModelArguments, DataArguments))
    model_args, data_args = parser.parse_args_into_dataclasses(
        args=["--model_name_or_path", "m", "--no_use_fast_tokenizer", "--freeze", "--layers", "3", "4",
              "--mode", "b", "--color", "blue", "--ratio", "0.5"], look_for_args_file=False)
    assert model_args == ModelArguments("m", None, False, True, [3, 4], "b")
    assert data_args.color == "blue"  # the value, as the reference parser passes it
    assert data_args.ratio == 0.5 and data_args.max_seq_length == 128
    yaml_file = tmp_path / "a.yaml"
    yaml_file.write_text("model_name_or_path: x\nmax_seq_length: 64\n")
    m, d = parser.parse_yaml_file(yaml_file)
    assert m.model_name_or_path == "x" and d.max_seq_length == 64
    with pytest.raises(ValueError, match="not used"):
        parser.parse_dict({"model_name_or_path": "x", "nope": 1})
    assert parser.parse_dict({"model_name_or_path": "x", "nope": 1}, allow_extra_keys=True)[0].model_name_or_path == "x"
    with pytest.raises(SystemExit):  # a required argument missing: argparse's own error
        parser.parse_args_into_dataclasses(args=[], look_for_args_file=False)
    *_, rest = parser.parse_args_into_dataclasses(args=["--model_name_or_path", "m", "--extra", "1"],
                                                  return_remaining_strings=True, look_for_args_file=False)
    assert rest == ["--extra", "1"]


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        HfArgumentParser(ModelArguments).parse_args_into_dataclasses(args=["--help"], look_for_args_file=False)
    text = capsys.readouterr().out
    assert "model folder" in text and "default: True" in text
