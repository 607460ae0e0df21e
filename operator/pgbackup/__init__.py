"""pgbackup-operator: declarative, verified PostgreSQL backups for Kubernetes."""

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "pgbackup-operator"


def installed_version() -> str:
    """The version of the installed distribution (what `--version` prints), 'dev' in a never-installed tree."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "dev"


__version__ = installed_version()
