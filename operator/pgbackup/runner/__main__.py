"""`python -m pgbackup.runner ...` = the `pgbackup` command."""

import sys

from pgbackup.runner.cli import main

sys.exit(main())
