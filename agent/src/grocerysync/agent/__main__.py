"""``python -m grocerysync.agent``: the same as the ``grocerysync-agent`` command."""

import sys

from grocerysync.agent.cli import main

sys.exit(main())
