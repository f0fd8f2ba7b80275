"""The machinery of settings objects: fields that know how to check and parse themselves, and
the one loader that fills them from arguments, the environment and the settings file.

A component's settings are a frozen dataclass deriving from :class:`Settings` with a
``section`` (its table in the settings file), whose fields are made with :func:`setting`::

    @dataclass(frozen=True)
    class WorkerSettings(Settings, section="worker"):
        queue: str = setting("default", doc="the queue to take jobs from")

``WorkerSettings.load(queue=None)`` then takes each value from (highest first) the explicit
argument (None: not given), ``$UNDERTOW_QUEUE``, ``queue = ...`` in ``[worker]`` of the
settings file, and the default; :func:`settings_rows` says which one each value came from.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import types
import typing
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from undertow.config._home import config_file, read_config_file
from undertow.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "SettingRow",
    "Settings",
    "effective_settings",
    "setting",
    "settings_rows",
]

#: the environment variable of a field is this prefix and the field's name in capitals
ENV_PREFIX = "UNDERTOW_"
#: where a value came from, when nothing set it
DEFAULT = "default"
ARGUMENT = "argument"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_NOUNS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
#: the settings classes by section, for :func:`effective_settings`
_SECTIONS: dict[str, type[Settings]] = {}

#: a field's own check: what the value must be (with the fix), or None when it is fine
Check = Callable[[Any], str | None]


def setting(
    default: Any,
    *,
    doc: str,
    check: Check | None = None,
    env: bool = True,
    file: bool = True,
    secret: bool = False,
    show: Callable[[Any], Any] | None = None,
) -> Any:
    """A settings field: its default, a line of documentation, its own check, whether an
    environment variable (``UNDERTOW_<NAME>``) and the settings file may set it, whether it
    is a secret (hidden from repr and from :func:`settings_rows`), and how to show it."""
    meta = {"doc": doc, "check": check, "env": env, "file": file, "secret": secret, "show": show}
    return dataclasses.field(default=default, repr=not secret, metadata=meta)


@dataclasses.dataclass(frozen=True)
class SettingRow:
    """One effective value, for ``undertow config show`` and the docs' table."""

    section: str
    name: str
    #: the value as it may be shown: secrets are ``***``, passwords in URLs masked
    value: Any
    #: "argument", "default", "$UNDERTOW_PORT", or "[host] in /home/ada/.undertow/config.toml"
    source: str
    #: the environment variable that sets it ("" if none does)
    env: str
    doc: str


class Settings:
    """The base of the settings objects; see the module's documentation."""

    section: ClassVar[str] = ""

    def __init_subclass__(cls, section: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if section:
            cls.section = section
            _SECTIONS[section] = cls

    def __post_init__(self) -> None:
        kinds = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            problem = _problem(f, kinds[f.name], value)
            if problem is not None:
                raise ConfigError(f"{problem} ({type(self).__name__})")
            object.__setattr__(self, f.name, _normal(kinds[f.name], value))

    @classmethod
    def load(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        file: str | os.PathLike[str] | None = None,
        **given: Any,
    ) -> Self:
        """Settings from ``given`` (None: not given), else the environment (``environ``,
        default ``os.environ``), else the section's table in the settings file (``file``,
        default ``config.toml`` in the undertow home), else the defaults."""
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise TypeError(
                f"{cls.__name__} has no setting {unknown[0]!r}; the settings are "
                f"{', '.join(fields)}"
            )
        environ = os.environ if environ is None else environ
        path = config_file() if file is None else Path(file)
        table = _table(cls, fields, path)
        kinds = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, f in fields.items():
            found = _find(f, kinds[name], given, environ, table, f"[{cls.section}] in {path}")
            if found is None:
                continue
            values[name], sources[name] = found
            problem = _problem(f, kinds[name], values[name])
            if problem is not None:
                where = "" if sources[name] == ARGUMENT else f" (from {sources[name]})"
                raise ConfigError(problem + where)
        _warn_if_secrets_shared(path, [n for n, s in sources.items() if s.startswith("[")], fields)
        settings = cls(**values)
        object.__setattr__(settings, "_sources", sources)
        return settings


def settings_rows(settings: Settings) -> list[SettingRow]:
    """Each value of ``settings`` with where it came from. For an object the loader did not
    make, a value is an "argument" unless it equals the default."""
    recorded: dict[str, str] | None = getattr(settings, "_sources", None)
    rows = []
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if recorded is not None:
            source = recorded.get(f.name, DEFAULT)
        else:
            source = DEFAULT if value == f.default else ARGUMENT
        rows.append(
            SettingRow(
                section=settings.section,
                name=f.name,
                value=_shown(f, value),
                source=source,
                env=_env_name(f) or "",
                doc=f.metadata["doc"],
            )
        )
    return rows


def effective_settings(
    *,
    environ: Mapping[str, str] | None = None,
    file: str | os.PathLike[str] | None = None,
) -> list[SettingRow]:
    """The effective value of every setting of every section, and where it comes from: what
    ``undertow config show`` prints."""
    rows: list[SettingRow] = []
    for _, cls in sorted(_SECTIONS.items()):
        rows += settings_rows(cls.load(environ=environ, file=file))
    return rows


# -- reading each value --------------------------------------------------------------------------


def _env_name(f: dataclasses.Field[Any]) -> str | None:
    return ENV_PREFIX + f.name.upper() if f.metadata.get("env", False) else None


def _table(
    cls: type[Settings], fields: Mapping[str, dataclasses.Field[Any]], path: Path
) -> dict[str, Any]:
    """The section's table of the settings file; a ConfigError for an unknown key."""
    table = read_config_file(path).get(cls.section, {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"{cls.section!r} in {path} must be a table ([{cls.section}]), not "
            f"{type(table).__name__}"
        )
    known = [name for name, f in fields.items() if f.metadata.get("file", False)]
    for key in table:
        if key not in known:
            raise ConfigError(
                f"[{cls.section}] in {path} has an unknown setting {key!r}; the known ones "
                f"are: {', '.join(known)}"
            )
    return table


def _find(
    f: dataclasses.Field[Any],
    kind: Any,
    given: Mapping[str, Any],
    environ: Mapping[str, str],
    table: Mapping[str, Any],
    where: str,
) -> tuple[Any, str] | None:
    """The value of field ``f`` and its source, or None to keep the default."""
    if given.get(f.name) is not None:
        return given[f.name], ARGUMENT
    variable = _env_name(f)
    if variable is not None and environ.get(variable, "").strip():
        text = environ[variable].strip()
        try:
            return _parse(kind, text), f"${variable}"
        except ValueError:
            noun = _noun(kind)
            raise ConfigError(f"{f.name} must be {noun}, not {text!r} (from ${variable})") from None
    if f.name in table:
        return table[f.name], where
    return None


def _base(kind: Any) -> tuple[Any, bool]:
    """The plain type of a field's type, and whether it may be None."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(kind))
    return kind, False


def _noun(kind: Any) -> str:
    base, optional = _base(kind)
    noun = _NOUNS.get(base, base.__name__)
    return f"{noun} (or unset)" if optional else noun


def _parse(kind: Any, text: str) -> Any:
    """``text`` (from an environment variable) as a value of type ``kind``."""
    base, optional = _base(kind)
    if optional and text.lower() in ("none", "null"):
        return None
    if base is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(text)
    if base in (int, float):
        return base(text.replace("_", ""))
    return text


def _normal(kind: Any, value: Any) -> Any:
    """``value`` in its field's own type where that loses nothing: a path as a string, a
    whole number as a float."""
    base, _ = _base(kind)
    if base is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _problem(f: dataclasses.Field[Any], kind: Any, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``f`` (its name, the value and the fix), or
    None when it is fine."""
    base, optional = _base(kind)
    if value is None:
        return None if optional else f"{f.name} must be {_noun(kind)}, not None"
    shown = "***" if f.metadata.get("secret") else repr(value)
    normal = _normal(kind, value)
    fits = isinstance(normal, base) and (base is bool or not isinstance(normal, bool))
    if not fits:
        return f"{f.name} must be {_noun(kind)}, not {shown}"
    if f.metadata.get("show") is not None and not f.metadata.get("secret"):
        shown = repr(f.metadata["show"](normal))
    check: Check | None = f.metadata.get("check")
    wanted = None if check is None else check(normal)
    return None if wanted is None else f"{f.name} must be {wanted}, not {shown}"


def _shown(f: dataclasses.Field[Any], value: Any) -> Any:
    if value is None:
        return None
    if f.metadata.get("secret"):
        return "***"
    show = f.metadata.get("show")
    return value if show is None else show(value)


def _warn_if_secrets_shared(
    path: Path, from_file: list[str], fields: Mapping[str, dataclasses.Field[Any]]
) -> None:
    if not any(fields[name].metadata.get("secret") for name in from_file):
        return
    with_secret = path.stat().st_mode
    if with_secret & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(
            f"{path} holds a secret and can be read by other users (mode "
            f"{stat.S_IMODE(with_secret):o}); run `chmod 600 {path}`",
            UserWarning,
            stacklevel=4,
        )
