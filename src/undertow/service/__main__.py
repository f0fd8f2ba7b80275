"""``python -m undertow.service FILE_OR_MODULE ...``: serve the exposed classes."""

import sys

from undertow.service._launch import main

sys.exit(main())
