"""kubectl-pgbackup: the kubectl plugin (a thin client of the pgbackup.dev API)."""
