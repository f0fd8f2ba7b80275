"""Helpers that import nothing above them: loopback hosts and the process's portal loop."""

from undertow._util._net import address_host, is_local_address, is_loopback
from undertow._util._portal import Portal, portal

__all__ = ["Portal", "address_host", "is_local_address", "is_loopback", "portal"]
