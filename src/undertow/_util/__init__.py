"""Helpers that import nothing above them: loopback hosts, the process's portal loop, the
rule for queue names, malloc's settings for a process that moves frames, logging with call
ids."""

from undertow._util._logs import (
    LOG_FORMATS,
    CallIdFilter,
    JsonFormatter,
    current_call,
    setup_logging,
)
from undertow._util._memory import tune_malloc
from undertow._util._names import check_queue_name
from undertow._util._net import address_host, is_local_address, is_loopback
from undertow._util._portal import Portal, portal

__all__ = [
    "LOG_FORMATS",
    "CallIdFilter",
    "JsonFormatter",
    "Portal",
    "address_host",
    "check_queue_name",
    "current_call",
    "is_local_address",
    "is_loopback",
    "portal",
    "setup_logging",
    "tune_malloc",
]
