"""Remote data: where a node keeps the results its servers leave behind.

Coming in pieces (see docs/guide.md, "Remote data"): the store itself is here; pointers, the
data server and the catalog build on it.
"""

from undertow.data._store import DEFAULT_MEMORY_LIMIT, DataStore, Entry

__all__ = ["DEFAULT_MEMORY_LIMIT", "DataStore", "Entry"]
