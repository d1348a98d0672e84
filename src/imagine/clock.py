"""One source of time, always timezone-aware UTC."""

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_z(moment: datetime) -> str:
    """Render a timestamp the way the API document does: `2025-06-14T05:21:11Z`."""
    # isoformat is C-fast; strftime is several times slower, and this runs on every status.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
