"""`python -m pgbackup.runner ...` = the `pgbackup` command."""

import sys

from pgbackup.runner.cli.entry import main

sys.exit(main())
