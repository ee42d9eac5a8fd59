"""Options dataclasses as the one declaration of a setting: its default, its help, its command-line flag.

A field declares itself with `option(default, "help", ...)`; `add_option_flags` turns the fields of a
dataclass into argparse flags (`max_steps` -> `--max-steps`, typed from the annotation, the default
appended to the help), `options_from_args` reads them back into an instance, `option_defaults` gives
the defaults to other layers (the pipeline's parameters), and `identity_fields` names the fields that
decide what a run produces (the resume-folder key; see `fish_speech.steps.train`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",  # noqa: A002 - the argparse word
    *,
    group: str | None = None,
    metavar: str | None = None,
    choices: typing.Sequence[Any] | None = None,
    flag: bool = True,
    identity: bool = True,
    repeat: bool = False,
) -> Any:
    """A dataclass field with its command-line metadata.

    `flag=False`: no command-line flag (set by code only). `identity=False`: the field does not change
    what a run produces (worker counts, logging, run control), so it is left out of resume keys.
    `repeat=True`: a list field whose flag may be given several times. No default: a required flag.
    """
    metadata = {
        "help": help,
        "group": group,
        "metavar": metavar,
        "choices": choices,
        "flag": flag,
        "identity": identity,
        "repeat": repeat,
    }
    if default is _MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _scalar_type(annotation: Any) -> tuple[Any, bool]:
    """(the flag's value type, whether None is allowed) of a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return _scalar_type(args[0])[0], optional
        return str, optional  # e.g. `str | int`: kept as text, the consumer parses it
    if origin is list:
        return typing.get_args(annotation)[0], False
    return annotation, False


def add_option_flags(
    parser: argparse.ArgumentParser, cls: type, groups: dict[str, str] | None = None
) -> None:
    """Add one flag per field of the options dataclass `cls` (fields with `flag=False` excepted).

    `groups` maps a field's `group` name to the title of an argparse argument group.
    """
    hints = typing.get_type_hints(cls)
    made: dict[str | None, Any] = {None: parser}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("flag", False):
            continue
        group = meta.get("group")
        if group not in made:
            made[group] = parser.add_argument_group((groups or {}).get(group, group))
        target = made[group]
        kind, _ = _scalar_type(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name}
        help_text = meta.get("help", "")
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        if f.default is _MISSING and f.default_factory is _MISSING:
            kwargs["required"] = True
        elif kind is bool:
            kwargs["action"] = "store_true"
            kwargs["default"] = f.default
        else:
            kwargs["default"] = f.default
            if f.default is not None and not meta.get("repeat"):
                shown = f"{f.default:g}" if isinstance(f.default, float) else f.default
                help_text = f"{help_text} (default {shown})" if help_text else f"default {shown}"
        if kind is not bool:
            kwargs["type"] = kind
        if meta.get("repeat"):
            kwargs["action"] = "append"
        target.add_argument(_flag(f.name), help=help_text, **kwargs)


def options_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of `cls` from parsed flags (fields without a flag keep their default)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})


def option_defaults(cls: type) -> dict[str, Any]:
    """Each field's default by name (required fields are left out)."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not _MISSING}


def identity_fields(cls: type) -> list[str]:
    """The fields that decide what a run produces: every field not declared `identity=False`."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("identity", True)]


def options_to_argv(cls: type, opts: Any) -> list[str]:
    """The flags that `add_option_flags(cls)` parses back into `opts` (None and False values left out)."""
    hints = typing.get_type_hints(cls)
    argv: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("flag", False):
            continue
        value = getattr(opts, f.name)
        kind, _ = _scalar_type(hints[f.name])
        if value is None or value is False:
            continue
        if kind is bool:
            argv.append(_flag(f.name))
        elif f.metadata.get("repeat"):
            for item in value:
                argv += [_flag(f.name), str(item)]
        else:
            argv += [_flag(f.name), str(value)]
    return argv


def pick_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The items of `values` named like a field of `cls` (e.g. a component's parameters that are settings)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}
