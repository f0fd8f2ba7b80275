"""Configuration: where undertow keeps its state, and the settings of each component.

The environment variables below are read when a function here is called, never at import.

``UNDERTOW_HOME``
    A directory of the user's own (default ``~/.undertow``), made on first use and readable
    by its owner only. The embedded registry and the settings file ``config.toml`` live here.
``UNDERTOW_BACKEND``
    The cluster backend's URL: ``sqlite:///absolute/path.db`` (the default, ``cluster.db``
    in the home) or ``redis://host:port/db`` for several machines. An explicit ``backend=``
    argument or ``--backend`` option wins over it.

Each component is made from a settings object, a frozen dataclass holding its defaults
(:class:`ServerSettings`, :class:`HostSettings`). ``HostSettings.load(port=None, ...)`` fills
one from (highest first) the arguments that are not None, the ``UNDERTOW_<FIELD>`` variables
(``UNDERTOW_PORT``, ``UNDERTOW_TOKEN``...), the ``[host]`` table of ``config.toml``, and the
defaults; :func:`effective_settings` lists every value with where it came from.
"""

from undertow.config._home import (
    BACKEND_ENV,
    CONFIG_FILE,
    HOME_ENV,
    backend_url,
    config_file,
    embedded_backend,
    home,
    read_config_file,
    redact_url,
)
from undertow.config._loader import (
    ENV_PREFIX,
    SettingRow,
    Settings,
    effective_settings,
    setting,
    settings_rows,
)
from undertow.config._settings import HostSettings, ServerSettings

__all__ = [
    "BACKEND_ENV",
    "CONFIG_FILE",
    "ENV_PREFIX",
    "HOME_ENV",
    "HostSettings",
    "ServerSettings",
    "SettingRow",
    "Settings",
    "backend_url",
    "config_file",
    "effective_settings",
    "embedded_backend",
    "home",
    "read_config_file",
    "redact_url",
    "setting",
    "settings_rows",
]
