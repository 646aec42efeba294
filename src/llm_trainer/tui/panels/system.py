"""Panel B — System Dashboard: GPU, CPU, RAM and the remaining time of active training."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from llm_trainer.progress import format_duration
from llm_trainer.render import telemetry_field
from llm_trainer.telemetry import fmt, reason
from llm_trainer.tui.panels.base import Panel
from llm_trainer.views import SystemView


def system_text(view: SystemView | None) -> Text:
    if view is None:
        return Text("reading telemetry...")
    snap = view.telemetry
    if snap.get("vram_total_mb") is not None:
        vram = f"{fmt(snap, 'vram_used_mb')} / {fmt(snap, 'vram_total_mb', ' MB')}"
    else:
        vram = telemetry_field(snap, "vram_total_mb")
    gpus = snap.get("gpus") or []
    gpu_name = f" ({gpus[0]['name']}{f' +{len(gpus) - 1}' if len(gpus) > 1 else ''})" \
        if gpus else ""
    ram = f"{fmt(snap, 'ram_used_mb')} / {fmt(snap, 'ram_total_mb', ' MB')}" \
        if snap.get("ram_total_mb") is not None else telemetry_field(snap, "ram_total_mb")
    if view.active_runs:
        remaining = (f"{format_duration(view.remaining_s)} "
                     f"({view.active_runs} active run{'s' if view.active_runs > 1 else ''})")
    else:
        remaining = "no active run"
    no_gpu = snap.get("gpu_util_pct") is None and snap.get("vram_total_mb") is None
    if no_gpu:  # one line for all GPU fields, with the reason said once
        gpu_lines = [f"GPU usage   n/a — {reason(snap, 'gpu_util_pct') or 'no data'}"]
    else:
        gpu_lines = [f"GPU usage   {telemetry_field(snap, 'gpu_util_pct', '%')}{gpu_name}",
                     f"VRAM        {vram}",
                     f"GPU temp    {telemetry_field(snap, 'gpu_temp_c', ' °C')}   power "
                     f"{fmt(snap, 'gpu_power_w', ' W')}"]
    lines = [
        *gpu_lines,
        f"CPU usage   {telemetry_field(snap, 'cpu_pct', '%')}",
        f"CPU cores   {telemetry_field(snap, 'cpu_cores')}   load {fmt(snap, 'load_avg')}",
        f"RAM         {ram}",
        f"Remaining   {remaining}",
    ]
    return Text("\n".join(lines))  # app.tcss: a line each on a short terminal


class SystemPanel(Panel):
    PANEL_TITLE = "B · System Dashboard"

    def __init__(self) -> None:
        super().__init__(id="system")

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="system-scroll"):
            yield Static(system_text(None), id="system-body")

    def focus_target(self):
        return self.query_one("#system-scroll")

    def update_system(self, view: SystemView) -> None:
        self.query_one("#system-body", Static).update(system_text(view))
