"""Command-line flags from config dataclasses: one flag per field, built from the field itself.

Every command exposes its config (TrackerConfig, ExportConfig, ...) the same way: a `ConfigFlags`
names the dataclass, the fields it exposes and any flag that is not the field's name with dashes
(`holdout_frames` -> `--holdout`). The flag's type, metavar and `--help` text come from the
field: its annotation, its default and the help and choices of its `omc.config.option`.

    TRACKER_FLAGS = ConfigFlags(TrackerConfig, title="tracker options")
    TRACKER_FLAGS.add_to(parser)          # in register()
    config = TRACKER_FLAGS.config(args)   # in the command: the defaults, overridden by the flags given

Flags left out keep the dataclass default (argparse never sees a default, so a config built
elsewhere, e.g. from a streams file, can be the base instead). Values by annotation: bool ->
`--x / --no-x`; int, float, str (choices from the option); `int | None`; `tuple[int, int]` ->
a size `WxH`; `tuple[int, ...]` / `tuple[str, ...]` -> comma-separated, the flag repeatable,
`none` for the empty tuple. A value the config refuses (InvalidConfig) is reported with the flag's
name: `--conf-thres must lie in [0, 1], got 1.5`.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

from omc.config import parse_size
from omc.errors import BadInput, InvalidConfig

C = TypeVar("C")

# Citations of omc-reference.md sections in help texts ("(4.2)", "(section 4.2)", "(2, "Peaks")"):
# for readers of the source, left out of --help.
_CITATION = re.compile(r"\s*\((?:section\s+)?\d[^)]*\)")
# The value that stands for an empty tuple.
EMPTY_LIST = "none"


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except BadInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _list_of(item: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    """'a,b' -> (item(a), item(b)); 'none' -> ()."""

    def parse(text: str) -> tuple[Any, ...]:
        if text.strip().lower() == EMPTY_LIST:
            return ()
        try:
            return tuple(item(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of {item.__name__} values") from None

    return parse


@dataclass(frozen=True)
class _Kind:
    """How one annotation becomes a flag: argparse type, metavar, how a value is written back."""

    parse: Callable[[str], Any] | None
    metavar: str | None
    text: Callable[[Any], str]
    is_list: bool = False


def _kind(annotation: Any) -> _Kind:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (annotation,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return _Kind(None, None, str)
    if annotation in (int, float):
        return _Kind(annotation, "N" if annotation is int else "X", str)
    if annotation is str:
        return _Kind(str, None, str)
    if origin is tuple and args == (int, int):
        return _Kind(_size, "WxH", _size_text)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, str):
        join: Callable[[Any], str] = lambda values: ",".join(map(str, values)) or EMPTY_LIST  # noqa: E731
        return _Kind(_list_of(args[0]), "LIST", join, is_list=True)
    raise TypeError(f"no flag for a field of type {annotation!r}")


@dataclass(frozen=True)
class ConfigFlags(Generic[C]):
    """The flags of one config dataclass on one command.

    config_class: the dataclass.  only: the fields exposed, in order (empty: all).  names: flags
    that are not `--` + the field's name with dashes.  title: the --help group's title.
    """

    config_class: type[C]
    only: Sequence[str] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    title: str = ""

    def __post_init__(self) -> None:
        known = {f.name for f in fields(self.config_class)}  # type: ignore[arg-type]
        unknown = [name for name in (*self.only, *self.names) if name not in known]
        if unknown:
            raise TypeError(f"{self.config_class.__name__} has no field(s) {', '.join(unknown)}")

    def _fields(self) -> list[Field[Any]]:
        by_name = {f.name: f for f in fields(self.config_class)}  # type: ignore[arg-type]
        return [by_name[name] for name in self.only] if self.only else list(by_name.values())

    def _dest(self, name: str) -> str:
        return f"{self.config_class.__name__}.{name}"

    def flag(self, name: str) -> str:
        """The flag of field `name`."""
        return self.names.get(name, "--" + name.replace("_", "-"))

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """One flag per exposed field, in a group of their own when `title` is set."""
        group: Any = parser.add_argument_group(self.title) if self.title else parser
        hints = typing.get_type_hints(self.config_class)
        for item in self._fields():
            kind = _kind(hints[item.name])
            default = item.default if item.default is not MISSING else None
            shown = item.metadata.get("default_text") or kind.text(default)
            meaning = _CITATION.sub("", item.metadata.get("help", item.name))
            text = f"{meaning} (default: {shown})".replace("%", "%%")
            flag, dest = self.flag(item.name), self._dest(item.name)
            if kind.parse is None:
                group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
                continue
            choices = item.metadata.get("choices") or None
            options: dict[str, Any] = {"dest": dest, "type": kind.parse, "default": argparse.SUPPRESS, "help": text}
            if kind.is_list:
                options.update(action="extend", metavar=kind.metavar)
                if choices:
                    options["help"] = text.replace(" (default:", f" (of {', '.join(choices)}; default:", 1)
            elif choices:
                options["choices"] = choices
            else:
                options["metavar"] = kind.metavar or item.name.upper()
            group.add_argument(flag, **options)

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """The exposed fields whose flags were given: field name -> value."""
        values: dict[str, Any] = {}
        for item in self._fields():
            dest = self._dest(item.name)
            if hasattr(args, dest):
                value = getattr(args, dest)
                values[item.name] = tuple(value) if isinstance(value, list) else value
        return values

    def config(self, args: argparse.Namespace, base: C | None = None) -> C:
        """`base` (default: the dataclass defaults) with the given flags' values; BadInput naming
        the flag when the config refuses a value."""
        try:
            built: C = replace(base, **self.given(args)) if base is not None else self.config_class(**self.given(args))  # type: ignore[type-var]
        except InvalidConfig as exc:
            if exc.config == self.config_class.__name__ and exc.field in {f.name for f in self._fields()}:
                raise exc.renamed(self.flag(exc.field)) from None
            raise
        return built

    def words(self, config: C) -> list[str]:
        """The flags (and values) that rebuild `config` from the defaults: the exposed fields that differ."""
        defaults = self.config_class()
        hints = typing.get_type_hints(self.config_class)
        words: list[str] = []
        for item in self._fields():
            value = getattr(config, item.name)
            if value == getattr(defaults, item.name):
                continue
            kind = _kind(hints[item.name])
            if kind.parse is None:
                words.append(self.flag(item.name) if value else "--no-" + self.flag(item.name)[2:])
            else:
                words += [self.flag(item.name), kind.text(value)]
        return words
