"""``HfArgumentParser``: fill dataclasses (``TrainingArguments`` and the user's own) from the command
line, a JSON or YAML file, or a dict, the way training scripts written for the Hugging Face stack do.

Each dataclass field becomes ``--name`` (and ``--name-with-dashes``): ``Optional[X]`` parses as X,
``bool`` takes ``--flag``, ``--flag true|false`` and, when it defaults to True, ``--no_flag``;
``list[X]`` takes several values; ``Enum`` / ``Literal`` fields offer their choices; ``dict``
fields take a JSON object. A field's ``metadata={"help": ...}`` becomes its help text.
"""
from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Union


def string_to_bool(value: Any) -> bool:
    """``yes/true/t/y/1`` -> True, ``no/false/f/n/0`` -> False (as the command line spells them)."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("yes", "true", "t", "y", "1"):
        return True
    if text in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, yes/no, 1/0), got {value!r}")


def _choice_type(choices: list[Any]) -> Any:
    by_text = {str(c): c for c in choices}
    return lambda arg: by_text.get(arg, arg)


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # TrainingArguments accepts some of these as plain strings (a file path, a name)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); a union of several types keeps ``str`` if it is one of them."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        if bool in args and len(args) == 2 and str in args:
            return str, optional
        for pick in (str, *args):
            if pick in args:
                return pick, optional
    return tp, False


class HfArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` built from one or more dataclass types."""

    def __init__(self, dataclass_types: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(**kwargs)
        if dataclass_types is None:
            dataclass_types = []
        elif dataclasses.is_dataclass(dataclass_types):
            dataclass_types = [dataclass_types]
        self.dataclass_types = list(dataclass_types)
        for dtype in self.dataclass_types:
            if not dataclasses.is_dataclass(dtype):
                raise TypeError(f"HfArgumentParser takes dataclass types; {dtype!r} is not one")
            self._add_dataclass_arguments(dtype)

    # -- building the parser ------------------------------------------------------------------
    def _add_dataclass_arguments(self, dtype: type) -> None:
        group = self.add_argument_group(getattr(dtype, "_argument_group_name", None) or dtype.__name__)
        try:
            hints = typing.get_type_hints(dtype)
        except (NameError, TypeError) as exc:
            raise TypeError(
                f"the type annotations of {dtype.__name__} could not be resolved ({exc}); define the dataclass "
                "at module level with importable types"
            ) from exc
        for f in dataclasses.fields(dtype):
            if not f.init:
                continue
            self._add_field(group, f, hints.get(f.name, f.type))

    @staticmethod
    def _add_field(group: Any, f: dataclasses.Field, tp: Any) -> None:
        options = [f"--{f.name}"]
        if "_" in f.name:
            options.append(f"--{f.name.replace('_', '-')}")
        kw = dict(f.metadata)
        aliases = kw.pop("aliases", [])
        options += [aliases] if isinstance(aliases, str) else list(aliases)
        tp, optional = _unwrap_optional(tp)
        origin = typing.get_origin(tp)
        has_default = f.default is not dataclasses.MISSING
        default = f.default if has_default else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        required = not has_default and f.default_factory is dataclasses.MISSING
        if origin is Literal or (isinstance(tp, type) and issubclass(tp, enum.Enum)):
            choices = list(typing.get_args(tp)) if origin is Literal else [m.value for m in tp]
            kw.update(choices=choices, type=_choice_type(choices))
        elif tp is bool:
            kw.update(type=string_to_bool, nargs="?", const=True)
            if not optional or default is not None:
                default = bool(default) if default is not None else False
        elif origin in (list, tuple) or tp in (list, tuple):
            args = typing.get_args(tp)
            kw.update(type=args[0] if args and args[0] is not Ellipsis else str, nargs="+")
        elif origin is dict or tp is dict:
            kw["type"] = _json_object
        elif tp is Any:
            kw["type"] = str
        else:
            kw["type"] = tp
        if required:
            kw["required"] = True
        else:
            kw["default"] = default
        kw.setdefault("help", " ")  # shows the default with ArgumentDefaultsHelpFormatter
        group.add_argument(*options, dest=f.name, **kw)
        if tp is bool and default is True:
            group.add_argument(f"--no_{f.name}", f"--no-{f.name.replace('_', '-')}", action="store_false",
                               dest=f.name, help=f"set {f.name} to False")

    # -- parsing ------------------------------------------------------------------------------
    def _build(self, values: dict[str, Any]) -> list[Any]:
        out = []
        for dtype in self.dataclass_types:
            names = {f.name for f in dataclasses.fields(dtype) if f.init}
            out.append(dtype(**{k: v for k, v in values.items() if k in names}))
            for k in names:
                values.pop(k, None)
        return out

    def parse_args_into_dataclasses(self, args: Iterable[str] | None = None, return_remaining_strings: bool = False,
                                    look_for_args_file: bool = True, args_filename: str | None = None,
                                    args_file_flag: str | None = None) -> tuple[Any, ...]:
        """Parse ``args`` (default ``sys.argv[1:]``) into one instance per dataclass type.

        Arguments may also come from ``args_filename``, from ``<script>.args`` beside the script
        (``look_for_args_file``), or from files named by ``args_file_flag``; the command line wins.
        Unknown arguments raise, unless ``return_remaining_strings`` (they are returned last).
        """
        argv = list(sys.argv[1:] if args is None else args)
        file_args: list[str] = []
        if args_filename or look_for_args_file:
            files: list[Path] = []
            if args_filename:
                files.append(Path(args_filename))
            elif look_for_args_file and sys.argv and sys.argv[0]:
                files.append(Path(sys.argv[0]).with_suffix(".args"))
            if args_file_flag:
                flag_parser = argparse.ArgumentParser(add_help=False)
                flag_parser.add_argument(args_file_flag, type=str, action="append")
                known, argv = flag_parser.parse_known_args(argv)
                files += [Path(p) for p in (getattr(known, args_file_flag.lstrip("-")) or [])]
            for path in files:
                if path.is_file():
                    file_args += path.read_text(encoding="utf-8").split()
        namespace, remaining = self.parse_known_args(file_args + argv)
        values = vars(namespace)
        outputs = self._build(values)
        if values:  # arguments added to the parser by hand come back as a Namespace
            outputs.append(argparse.Namespace(**values))
        if return_remaining_strings:
            return (*outputs, remaining)
        if remaining:
            raise ValueError(f"Some specified arguments are not used by the HfArgumentParser: {remaining}")
        return tuple(outputs)

    def parse_dict(self, args: dict[str, Any], allow_extra_keys: bool = False) -> tuple[Any, ...]:
        """One instance per dataclass type from a dict; unknown keys raise unless ``allow_extra_keys``."""
        values = dict(args)
        outputs = self._build(values)
        if values and not allow_extra_keys:
            raise ValueError(
                f"Some keys are not used by the HfArgumentParser: {sorted(values)} "
                f"(pass allow_extra_keys=True to ignore them)"
            )
        return tuple(outputs)

    def parse_json_file(self, json_file: str | os.PathLike, allow_extra_keys: bool = False) -> tuple[Any, ...]:
        """Read a JSON object from ``json_file`` and parse it as :meth:`parse_dict` does."""
        path = Path(json_file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of argument names to values")
        return self.parse_dict(data, allow_extra_keys=allow_extra_keys)

    def parse_yaml_file(self, yaml_file: str | os.PathLike, allow_extra_keys: bool = False) -> tuple[Any, ...]:
        """Read a YAML mapping from ``yaml_file`` (needs PyYAML) and parse it as :meth:`parse_dict` does."""
        try:
            import yaml
        except ImportError as exc:
            raise ImportError("parse_yaml_file needs PyYAML: pip install pyyaml") from exc
        path = Path(yaml_file)
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a YAML mapping of argument names to values")
        return self.parse_dict(data, allow_extra_keys=allow_extra_keys)
