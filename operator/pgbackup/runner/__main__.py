"""`python -m pgbackup.runner ...` = the `pgbackup` command."""

import sys

from pgbackup.runner.cli.main import main

sys.exit(main())
