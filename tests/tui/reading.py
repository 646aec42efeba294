"""Reading what the dashboard shows, for its tests."""

from __future__ import annotations


def text_of(app, selector: str) -> str:
    """What a ``Static`` shows, as plain text."""
    from textual.widgets import Static

    return str(app.query_one(selector, Static).render())


def screen_lines(app) -> list[str]:
    """The terminal as the user sees it: one string per row, every layer composed (pop-ups
    over panels). Textual's compositor is private; this is what `export_screenshot` draws."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def screen_text(app) -> str:
    return "\n".join(screen_lines(app))


def panel_text(app, panel_id: str) -> str:
    """What is visible of one panel on screen (its border included): the screen's rows and
    columns where the panel lies, so a field scrolled or pushed out of sight is not in it."""
    region = app.query_one(f"#{panel_id}").region
    rows = screen_lines(app)[region.y:region.bottom]
    return "\n".join(row[region.x:region.right] for row in rows)


def asking(app) -> bool:
    """A confirmation is on top with its question and buttons mounted (a pushed screen is on
    top before its widgets are: a test that reads the question at once can miss it)."""
    screen = app.screen
    return (type(screen).__name__ == "ConfirmScreen" and len(screen.query("#question")) > 0
            and len(screen.query("#no")) > 0)
