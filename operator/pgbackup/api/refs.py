"""References to Secrets: the only place credentials come from."""

from __future__ import annotations

from pydantic import Field

from pgbackup.api.base import ApiModel, DnsName, SecretKey


class DatabaseCredentialsRef(ApiModel):
    """A Secret in the policy's namespace holding the database user and password."""

    name: DnsName
    """Name of the Secret."""
    username_key: SecretKey = "username"
    """Key of the user name in the Secret."""
    password_key: SecretKey = "password"
    """Key of the password in the Secret."""


class S3CredentialsRef(ApiModel):
    """A Secret in the policy's namespace holding the S3 access key pair."""

    name: DnsName
    """Name of the Secret."""
    access_key_id_key: SecretKey = "accessKeyId"
    """Key of the access key id in the Secret."""
    secret_access_key_key: SecretKey = "secretAccessKey"
    """Key of the secret access key in the Secret."""


class SecretKeyRef(ApiModel):
    """One key of a Secret in the same namespace."""

    name: DnsName
    """Name of the Secret."""
    key: SecretKey = Field(...)
    """Key within the Secret."""
