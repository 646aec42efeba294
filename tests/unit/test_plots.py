"""Loss plots: drawn only on a terminal that can show them; axes, labels and colors."""

import io

from llm_trainer.plots import Series, curve_series, plots_enabled, render_plot
from llm_trainer.views import LossCurve

CURVE = LossCurve(train_steps=[10, 20, 30, 40], train_loss=[4.0, 3.5, 3.1, 2.9],
                  val_steps=[20, 40], val_loss=[3.6, 3.0])


class FakeStream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_plots_only_on_a_terminal_that_is_not_dumb():
    assert plots_enabled(FakeStream(True), {"TERM": "xterm-256color"})
    assert plots_enabled(FakeStream(True), {})
    assert not plots_enabled(FakeStream(True), {"TERM": "dumb"})
    assert not plots_enabled(FakeStream(False), {"TERM": "xterm"})
    closed = FakeStream(True)
    closed.close()
    closed.isatty = io.StringIO().isatty  # a closed file raises ValueError
    assert not plots_enabled(closed, {"TERM": "xterm"})


def test_render_draws_axes_legend_and_integer_steps_at_the_requested_size():
    text = render_plot(curve_series(CURVE), 60, 14, color=False)
    lines = text.splitlines()
    assert len(lines) == 14 and max(len(line) for line in lines) <= 60
    assert "┌" in text and "┘" in text and "step" in lines[-1]
    assert "train" in text and "val" in text
    assert " 10 " in lines[-2] + " " and "40" in lines[-2] and "10.0" not in text
    assert "\x1b[" not in text


def test_render_colors_runs_and_labels_one_legend_entry_per_run():
    series = (curve_series(CURVE, name="#1", color="blue")
              + curve_series(CURVE, name="#2", color="red"))
    assert [s.label for s in series] == ["#1", "", "#2", ""]
    text = render_plot(series, 80, 16)
    assert "\x1b[38;5;4m" in text and "\x1b[38;5;1m" in text  # blue and red
    assert "#1" in text and "#2" in text and " val" not in text


def test_nothing_to_draw_gives_no_text():
    assert render_plot([], 80, 20) == ""
    assert render_plot([Series("train", [], [], "blue")], 80, 20) == ""
    assert curve_series(LossCurve()) == []


def test_render_is_as_wide_as_asked_even_beyond_the_terminal():
    # a TUI widget or a wide terminal: plotext must not clip to what it thinks the terminal is
    lines = render_plot(curve_series(CURVE), 150, 12, color=False).splitlines()
    assert max(len(line) for line in lines) == 150
