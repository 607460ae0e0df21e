"""The pgbackup.dev/v1alpha1 API as pydantic models: the single source of truth for CRDs, operator and runner."""

from pgbackup.api.base import API_VERSION, GROUP, VERSION, Condition, format_duration, parse_duration
from pgbackup.api.policy import BackupPolicy, BackupPolicySpec, BackupPolicyStatus
from pgbackup.api.restore import RestoreRequest, RestoreRequestSpec, RestoreRequestStatus
from pgbackup.api.summary import JobSummary

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "BackupPolicy",
    "BackupPolicySpec",
    "BackupPolicyStatus",
    "Condition",
    "JobSummary",
    "RestoreRequest",
    "RestoreRequestSpec",
    "RestoreRequestStatus",
    "format_duration",
    "parse_duration",
]
