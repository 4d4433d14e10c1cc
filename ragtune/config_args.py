"""Command-line flags derived from a config dataclass, so a new field is a new flag everywhere at once.

A field ``max_tokens: int = 256`` becomes ``--max-tokens`` (type int, default 256); its
``metadata`` may hold ``help``, ``choices``, ``flags`` (extra spellings), ``parse`` (a
function from the text to the value), ``switch`` (a bool set by the flag alone, no value) and
``cli: False`` (no flag: a positional argument or an internal field). ``bool`` fields take true/false, optional fields also
``none``. Like transformers' HfArgumentParser, without importing transformers for ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable


def parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str):
        return None if text.lower() in ("none", "auto", "off", "") else parse(text)

    parse_optional.__name__ = getattr(parse, "__name__", "value")
    return parse_optional


def _field_parser(tp) -> Callable[[str], Any]:
    """The text -> value function for a field annotation (``int | None`` accepts 'none')."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return _optional(_field_parser(inner))
    if tp is bool:
        return parse_bool
    if tp in (int, float, str):
        return tp
    if typing.get_origin(tp) is typing.Literal:
        return str
    return str


def flag_name(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, *, exclude: tuple[str, ...] = (),
                            defaults_to_none: bool = False, group: str | None = None,
                            helps: dict[str, str] | None = None, default_note: str = "") -> list[str]:
    """Add one flag per field of ``cls``; returns the field names added.

    ``defaults_to_none``: every flag defaults to None, for commands that start from computed
    defaults and apply only what was given (``ragtune train`` over ``defaults_for(model)``).
    ``helps`` adds help for fields whose metadata has none (a field without either still gets
    its flag, described by its name); ``default_note`` ends every help, e.g. "(default: per model)".
    """
    hints = typing.get_type_hints(cls)
    target = parser.add_argument_group(group) if group else parser
    added = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init or f.metadata.get("cli") is False:
            continue
        meta = f.metadata
        default = None if defaults_to_none else _default(f)
        help_text = meta.get("help") or (helps or {}).get(f.name) or f.name.replace("_", " ")
        if not defaults_to_none and default is not None:
            help_text += " (default: %(default)s)"
        elif default_note:
            help_text += f" {default_note}"
        if meta.get("switch"):  # a bool given by its presence alone (``--index``), as the flag always was
            target.add_argument(flag_name(f), *meta.get("flags", ()), dest=f.name, action="store_true",
                                default=None if defaults_to_none else bool(default), help=meta.get("help") or f.name)
            added.append(f.name)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text}
        choices = meta.get("choices")
        if choices is None and typing.get_origin(hints[f.name]) is typing.Literal:
            choices = typing.get_args(hints[f.name])
        if choices is not None:
            kwargs["choices"] = list(choices)
        kwargs["type"] = meta.get("parse") or _field_parser(hints[f.name])
        if hints[f.name] is bool or hints[f.name] == (bool | None):
            kwargs["metavar"] = "{true,false}"
        target.add_argument(flag_name(f), *meta.get("flags", ()), **kwargs)
        added.append(f.name)
    return added


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def dataclass_from_args(cls, args: argparse.Namespace, **overrides):
    """Build ``cls`` from parsed flags (fields not on the command line keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if f.init and hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def given_fields(cls, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` that were set on the command line (flags added with ``defaults_to_none``)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if hasattr(args, f.name) and getattr(args, f.name) is not None}
