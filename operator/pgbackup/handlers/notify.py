"""Webhook notifications: a JSON POST per event type the policy subscribed to, sent in a background thread
with a timeout and retries, so that a slow or failing receiver never delays or fails a handler.

The URL is read from its Secret when sending and used only for the request: URLs often embed a token, so it
is never logged, put into an Event or an error message.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from pgbackup.api.policy import Notifications, WebhookNotification
from pgbackup.handlers import kube

TIMEOUT_SECONDS = 5.0
ATTEMPTS = 3
BACKOFF_SECONDS = 0.5  # before the 2nd attempt; doubled before each further one
USER_AGENT = "pgbackup-operator"
logger = logging.getLogger("pgbackup.notify")


class DeliveryError(Exception):
    """A webhook delivery failed; the message never contains the URL."""


def _webhook(policy: Mapping[str, Any]) -> WebhookNotification | None:
    try:
        notifications = Notifications.model_validate((policy.get("spec") or {}).get("notifications") or {})
    except ValidationError:
        return None  # the policy handler reports an invalid spec
    return notifications.webhook


def notify(policy: Mapping[str, Any], event: str, *, reason: str, message: str,
           backup_id: str | None = None) -> threading.Thread | None:
    """Send `event` to the policy's webhook when it subscribed to it; returns the sending thread (None when
    nothing is sent). Never raises: a notification must not fail the handler that reports the event."""
    try:
        webhook = _webhook(policy)
        if webhook is None or event not in webhook.events:
            return None
        metadata = policy.get("metadata") or {}
        payload = {
            "event": event,
            "namespace": metadata.get("namespace"),
            "policy": metadata.get("name"),
            "backupId": backup_id,
            "reason": reason,
            "message": message,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        ref = {"apiVersion": policy.get("apiVersion"), "kind": policy.get("kind"),
               "metadata": {key: metadata.get(key) for key in ("name", "namespace", "uid")}}
        # The copied context lets the thread post Events through kopf's queue, like a sync handler does.
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(_send, ref, webhook, payload), daemon=True,
                                  name=f"notify-{metadata.get('name')}-{event}")
        thread.start()
        return thread
    except Exception:  # noqa: BLE001 - reporting must go on whatever happens here
        logger.exception(f"could not start the {event} notification")
        return None


def _send(ref: dict[str, Any], webhook: WebhookNotification, payload: dict[str, Any]) -> None:
    namespace = ref["metadata"]["namespace"]
    secret = webhook.url_secret
    where = f"webhook of BackupPolicy {namespace}/{ref['metadata']['name']} (URL from Secret {namespace}/" \
            f"{secret.name}, key {secret.key!r})"
    try:
        url = kube.read_secret_value(namespace, secret.name, secret.key)
        if not url:
            raise DeliveryError(f"the Secret or its key {secret.key!r} does not exist; create it with the URL")
        deliver(url, payload)
    except Exception as error:  # noqa: BLE001 - any failure becomes a Warning Event, never an exception
        text = str(error) if isinstance(error, DeliveryError) else type(error).__name__
        message = f"{where} did not accept the {payload['event']} notification: {text}. " \
                  f"Backups are not affected; check the receiver and the URL in the Secret."
        logger.warning(message)
        try:
            kopf.warn(cast(kopf.Body, ref), reason="NotificationFailed", message=message)
        except Exception:  # noqa: BLE001 - the operator may be stopping
            logger.exception("could not post the NotificationFailed Event")
        return
    logger.info(f"{payload['event']} notification delivered to the {where}")


def deliver(url: str, payload: dict[str, Any], *, attempts: int = ATTEMPTS, timeout: float = TIMEOUT_SECONDS,
            backoff: float = BACKOFF_SECONDS) -> None:
    """POST `payload` as JSON; retried `attempts` times with exponential backoff. Raises DeliveryError
    describing the last failure (status code or network error, not the URL)."""
    if not url.startswith(("https://", "http://")):
        raise DeliveryError("the URL in the Secret is not an http:// or https:// URL")
    body = json.dumps(payload).encode()
    problem = "no attempt made"
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
                if 200 <= response.status < 300:
                    return
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
        except urllib.error.URLError as error:
            problem = f"network error ({type(error.reason).__name__}: {_without(url, str(error.reason))})"
        except (TimeoutError, OSError) as error:
            problem = f"network error ({type(error).__name__}: {_without(url, str(error))})"
    raise DeliveryError(f"{problem} after {attempts} attempts")


def _without(url: str, text: str) -> str:
    return text.replace(url, "<url>")
