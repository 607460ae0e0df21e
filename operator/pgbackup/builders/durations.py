"""Durations for people, as kubectl and Go's time.Duration show them: '1.6s', '45s', '1m13s', '2h3m', '2d1h'."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """Tenths under 10 s, whole seconds under a minute, minutes and seconds under an hour, hours and minutes
    under two days, then days and hours; zero parts are left out ('2m', '2h', '3d'), negatives show as '0s'."""
    if seconds < 9.95:
        tenths = f"{max(0.0, seconds):.1f}".removesuffix(".0")
        return f"{tenths}s"
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    total_minutes = round(seconds / 60)
    hours, minutes = divmod(total_minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days}d{hours}h" if hours else f"{days}d"
