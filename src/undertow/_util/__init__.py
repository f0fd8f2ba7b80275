"""Helpers that import nothing above them: loopback hosts, the process's portal loop, the
rule for queue names, malloc's settings for a process that moves frames, logging with call
ids, Jupyter glue."""

from undertow._util._logs import (
    LOG_FORMATS,
    CallIdFilter,
    JsonFormatter,
    current_call,
    setup_logging,
)
from undertow._util._memory import tune_malloc
from undertow._util._names import check_queue_name
from undertow._util._net import address_host, interface_addresses, is_local_address, is_loopback
from undertow._util._notebook import CellOutput, cell_output, html_table, in_kernel, kernel
from undertow._util._portal import Portal, portal

__all__ = [
    "LOG_FORMATS",
    "CallIdFilter",
    "CellOutput",
    "JsonFormatter",
    "Portal",
    "address_host",
    "cell_output",
    "check_queue_name",
    "current_call",
    "html_table",
    "in_kernel",
    "interface_addresses",
    "is_local_address",
    "is_loopback",
    "kernel",
    "portal",
    "setup_logging",
    "tune_malloc",
]
