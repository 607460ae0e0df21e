"""Events on the custom resources, from kopf handlers and from the operator's own periodic work alike."""

from __future__ import annotations

from typing import Any, cast

import kopf

from pgbackup.handlers import kube


def post(obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
    """An Event on `obj` (only its apiVersion, kind and metadata are read). Inside a kopf handler it goes through
    kopf's queue; outside one (handlers/recording.py's reconcile) kopf has no queue, so it is written directly."""
    try:
        (kopf.warn if warning else kopf.info)(cast(kopf.Body, obj), reason=reason, message=message)
    except LookupError:  # no kopf handler context here
        kube.create_event(obj, "Warning" if warning else "Normal", reason, message)
