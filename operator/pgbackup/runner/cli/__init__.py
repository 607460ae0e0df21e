"""The command line (`pgbackup`): the parser, the exit codes, and one module per command group that turns
arguments into calls of the layers below (backup, catalog, restore, wal, verify); `demo` is `make demo`."""
