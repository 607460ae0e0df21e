"""pgbackup-operator: declarative, verified PostgreSQL backups for Kubernetes."""

__version__ = "0.1.0"
