"""Which Secret keys a policy refers to, so the operator can check they exist before a Job needs them."""

from __future__ import annotations

from dataclasses import dataclass

from pgbackup.api.policy import BackupPolicySpec
from pgbackup.builders.conditions import Check


@dataclass(frozen=True)
class SecretKeyUse:
    """One key of one Secret, and the spec field that refers to it (for error messages)."""

    secret: str
    key: str
    field: str


def referenced_secret_keys(spec: BackupPolicySpec) -> list[SecretKeyUse]:
    """Every Secret key the spec refers to, in spec order, without duplicates."""
    uses: list[SecretKeyUse] = []
    creds = spec.database.credentials_secret
    uses += [
        SecretKeyUse(creds.name, creds.username_key, "spec.database.credentialsSecret.usernameKey"),
        SecretKeyUse(creds.name, creds.password_key, "spec.database.credentialsSecret.passwordKey"),
    ]
    if spec.database.ssl_root_cert_secret:
        ref = spec.database.ssl_root_cert_secret
        uses.append(SecretKeyUse(ref.name, ref.key, "spec.database.sslRootCertSecret"))
    s3 = spec.storage.s3
    if s3 and s3.credentials_secret:
        ref3 = s3.credentials_secret
        uses += [
            SecretKeyUse(ref3.name, ref3.access_key_id_key, "spec.storage.s3.credentialsSecret.accessKeyIdKey"),
            SecretKeyUse(ref3.name, ref3.secret_access_key_key, "spec.storage.s3.credentialsSecret.secretAccessKeyKey"),
        ]
    if s3 and s3.ca_bundle_secret:
        uses.append(SecretKeyUse(s3.ca_bundle_secret.name, s3.ca_bundle_secret.key, "spec.storage.s3.caBundleSecret"))
    if spec.encryption and spec.encryption.identity_secret:
        ref = spec.encryption.identity_secret
        uses.append(SecretKeyUse(ref.name, ref.key, "spec.encryption.identitySecret"))
    if spec.notifications.webhook:
        ref = spec.notifications.webhook.url_secret
        uses.append(SecretKeyUse(ref.name, ref.key, "spec.notifications.webhook.urlSecret"))
    unique: dict[tuple[str, str], SecretKeyUse] = {}
    for use in uses:
        unique.setdefault((use.secret, use.key), use)
    return list(unique.values())


def referenced_secrets(spec: BackupPolicySpec) -> list[tuple[str, str]]:
    """(Secret name, key) pairs the spec refers to."""
    return [(use.secret, use.key) for use in referenced_secret_keys(spec)]


def missing_secret_checks(namespace: str, missing: list[tuple[SecretKeyUse, bool]]) -> list[Check]:
    """One check per missing Secret (naming the keys it needs) and one per missing key."""
    absent: dict[str, list[SecretKeyUse]] = {}
    key_checks: list[Check] = []
    for use, whole_secret in missing:
        if whole_secret:
            absent.setdefault(use.secret, []).append(use)
        else:
            key_checks.append(Check(False, "SecretKeyMissing",
                                f"Secret {namespace}/{use.secret} has no key {use.key!r} (referenced by {use.field}); "
                                f"add the key or fix the reference"))
    secret_checks = [
        Check(False, "SecretNotFound",
              f"Secret {namespace}/{secret} (referenced by "
              f"{', '.join(dict.fromkeys(use.field.rsplit('.', 1)[0] for use in uses))}) does not exist; "
              f"create it with keys {', '.join(repr(use.key) for use in uses)}")
        for secret, uses in absent.items()
    ]
    return secret_checks + key_checks
