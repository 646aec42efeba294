"""Reading what the dashboard shows, for its tests."""

from __future__ import annotations


def text_of(app, selector: str) -> str:
    """What a ``Static`` shows, as plain text."""
    from textual.widgets import Static

    return str(app.query_one(selector, Static).render())
