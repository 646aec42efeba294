"""``TrainState``: everything the loop needs to continue exactly where it stopped.

It is saved as ``trainer.json`` in every checkpoint (next to the weights, optimizer and RNG
files) and loaded back on resume. Callbacks that keep state (the early-stop counter, the
anomaly guard's history and rollback count, the sampler's counters) store it under
``callbacks[<callback name>]``, so one object round-trips the whole loop. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_trainer.data.batches import DataPosition
from llm_trainer.store.schema import upgrade
from llm_trainer.training.schedule import LRSchedule

TRAINER_SCHEMA = 2  # 1: the first release (no schema_version in trainer.json)


def _v1_to_v2(state: dict[str, Any]) -> dict[str, Any]:
    """v1 knew no callbacks, no early end, and not which step its val loss was from."""
    return {"best_val_step": None, "last_eval_step": -1, "finished": None, "callbacks": {},
            **state}


@dataclass
class TrainState:
    step: int = 0
    """Optimizer steps taken (a rollback moves it back to the checkpoint's step)."""
    position: DataPosition = field(default_factory=DataPosition)
    """Where the next batch is read: (epoch, cursor). A rollback does not rewind it, so the
    batches that caused an anomaly are skipped."""
    schedule: LRSchedule | None = None
    """The learning-rate curve; a rollback lowers its peak."""
    val_loss: float | None = None
    """The latest validation loss."""
    best_val_loss: float | None = None
    """The lowest validation loss so far, and the step it was measured at."""
    best_val_step: int | None = None
    last_eval_step: int = -1
    """The step the latest validation loss belongs to."""
    finished: str | None = None
    """Why the plan ended before its last step (an early stop), so resume does not go on."""
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Callback name -> that callback's ``state_dict()``."""

    def record_eval(self, val_loss: float) -> bool:
        """Store a validation result; True when it is the best so far."""
        self.val_loss, self.last_eval_step = val_loss, self.step
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss, self.best_val_step = val_loss, self.step
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "schema_version": TRAINER_SCHEMA,
            "step": self.step,
            "data_position": self.position.to_json(),
            "schedule": self.schedule.state_dict() if self.schedule is not None else None,
            "val_loss": self.val_loss,
            "best_val_loss": self.best_val_loss,
            "best_val_step": self.best_val_step,
            "last_eval_step": self.last_eval_step,
            "finished": self.finished,
            "callbacks": {k: dict(v) for k, v in self.callbacks.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accepts every trainer.json written so far (migrated to ``TRAINER_SCHEMA``)."""
        state = upgrade(state, current=TRAINER_SCHEMA, migrations={1: _v1_to_v2},
                        source="trainer.json")
        p = state.get("data_position") or {}
        self.step = int(state.get("step", 0))
        self.position = DataPosition(int(p.get("epoch", 0)), int(p.get("cursor", 0)))
        sched = state.get("schedule")
        self.schedule = LRSchedule.from_state_dict(sched) if sched else None
        self.val_loss = state.get("val_loss")
        self.best_val_loss = state.get("best_val_loss")
        self.best_val_step = state.get("best_val_step")
        self.last_eval_step = int(state.get("last_eval_step", -1))
        self.finished = state.get("finished")
        self.callbacks = {k: dict(v) for k, v in (state.get("callbacks") or {}).items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TrainState:
        out = cls()
        out.load_state_dict(state)
        return out
