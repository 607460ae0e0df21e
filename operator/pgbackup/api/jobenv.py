"""The contract between the Jobs the operator builds and the runner inside them: env names and mount paths.

Credentials reach the runner only through `secretKeyRef` env vars or files mounted from Secrets; the policy
spec (which holds Secret *references*, never values) is handed over as JSON in one env var.
"""

from __future__ import annotations

# JSON: {"name": <policy>, "namespace": <ns>, "spec": <BackupPolicySpec wire dict>}
ENV_POLICY = "PGBACKUP_POLICY"
# JSON: {"name": <request>, "namespace": <ns>, "spec": <RestoreRequestSpec wire dict>} (restore Jobs only)
ENV_RESTORE = "PGBACKUP_RESTORE"
# Backup id to verify (verification Jobs only)
ENV_VERIFY_BACKUP_ID = "PGBACKUP_VERIFY_BACKUP_ID"
ENV_BACKUP_PURPOSE = "PGBACKUP_BACKUP_PURPOSE"  # 'on-demand' in backup-now Jobs (recorded in the manifest)

# libpq and boto3 read these natively, so no credential is ever copied into an argument list.
ENV_DB_USER = "PGUSER"
ENV_DB_PASSWORD = "PGPASSWORD"
ENV_DB_SSLROOTCERT = "PGSSLROOTCERT"
ENV_S3_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
ENV_S3_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_S3_CA_BUNDLE = "AWS_CA_BUNDLE"
ENV_AGE_IDENTITY_FILE = "PGBACKUP_AGE_IDENTITY_FILE"

# Where things are mounted in the Job's pod.
SCRATCH_DIR = "/scratch"
ENV_SCRATCH = "PGBACKUP_SCRATCH"
VOLUME_STORAGE_ROOT = "/var/lib/pgbackup/storage"
ENV_VOLUME_ROOT = "PGBACKUP_VOLUME_ROOT"
# Application volumes (spec.volumes): each PVC at <root>/<claimName>, read-only in backup Jobs, read-write in
# restore Jobs; the runner reads the root from the env var (tests point it at a directory).
APP_VOLUMES_ROOT = "/var/lib/pgbackup/volumes"
ENV_APP_VOLUMES_ROOT = "PGBACKUP_APP_VOLUMES_ROOT"
SECRETS_ROOT = "/var/run/pgbackup/secrets"
DB_CA_DIR = f"{SECRETS_ROOT}/db-ca"
S3_CA_DIR = f"{SECRETS_ROOT}/s3-ca"
AGE_IDENTITY_DIR = f"{SECRETS_ROOT}/age"

# Where the runner writes its JobSummary (Kubernetes reads the container's terminationMessagePath).
ENV_SUMMARY_FILE = "PGBACKUP_SUMMARY_FILE"

# Runner sub-commands the Jobs invoke.
COMMAND_BACKUP = ["pgbackup", "backup"]
COMMAND_RESTORE = ["pgbackup", "restore-request"]
COMMAND_VERIFY = ["pgbackup", "verify"]
COMMAND_CATALOG_SUMMARY = ["pgbackup", "catalog-summary"]
COMMAND_WAL_STREAM = ["pgbackup", "wal-stream"]

# The runner exits with these codes (documented in the README); barman's convention.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NETWORK = 2
EXIT_USAGE = 3
EXIT_GENERAL = 4

# Copies (BackupPolicy.spec.copies): each copy's S3 credentials get env names of their own (the primary's
# AWS_* stay the primary's); a volume copy is mounted at COPY_VOLUME_ROOT/<name>.
COPY_VOLUME_ROOT = "/var/lib/pgbackup/copies"


def copy_env_prefix(copy_name: str) -> str:
    """'offsite-eu' -> 'PGBACKUP_COPY_OFFSITE_EU_' (copy names are DNS labels, so this is unique per copy)."""
    return f"PGBACKUP_COPY_{copy_name.upper().replace('-', '_')}_"


def copy_access_key_env(copy_name: str) -> str:
    return f"{copy_env_prefix(copy_name)}AWS_ACCESS_KEY_ID"


def copy_secret_key_env(copy_name: str) -> str:
    return f"{copy_env_prefix(copy_name)}AWS_SECRET_ACCESS_KEY"


def copy_volume_root_env(copy_name: str) -> str:
    return f"{copy_env_prefix(copy_name)}VOLUME_ROOT"
