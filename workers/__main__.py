"""`python -m workers`: a supervisor with N worker processes.

python -m workers [--config PATH] [--tasks MOD ...] [--processes N] [--concurrency M]
                  [--queues q1,q2]
"""

from __future__ import annotations

import sys

from workers.supervisor import main

if __name__ == "__main__":
    sys.exit(main())
