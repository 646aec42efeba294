"""Samples during training: a training callback that writes text with the KV-cache
generator. It lives here, above training (it needs the generator), and the worker adds it
to a run's callbacks when ``train.sample_interval`` asks for samples."""

from __future__ import annotations

from typing import Any

from llm_trainer.config import TrainConfig
from llm_trainer.training.callbacks import Callback
from llm_trainer.training.events import Sample


class Sampler(Callback):
    """Every ``interval`` steps, continues each prompt with the KV-cache generator and emits
    ``on_sample``. Its randomness comes from a generator seeded by (seed, step, prompt), never
    from the global RNG, and the model is in eval mode (no dropout) while it samples: a run
    with samples on trains exactly as one with them off."""

    name = "sampler"

    def __init__(self, interval: int, prompts: tuple[str, ...], tokens: int,
                 temperature: float, seed: int) -> None:
        self.interval, self.prompts, self.tokens = interval, prompts, tokens
        self.temperature, self.seed = temperature, seed
        self.written = 0
        self.last_step: int | None = None

    @classmethod
    def from_config(cls, t: TrainConfig) -> Sampler | None:
        """The sampler ``train.sample_interval`` asks for (None: no samples)."""
        if not t.sample_interval:
            return None
        return cls(t.sample_interval, t.sample_prompts, t.sample_tokens, t.sample_temperature,
                   t.seed)

    def seed_for(self, step: int, index: int) -> int:
        return (self.seed * 1_000_003 + step * 101 + index) % (2**63)

    def on_step_end(self, trainer, stats) -> None:
        if stats.step % self.interval == 0:
            self.sample(trainer, stats.step)

    def sample(self, trainer, step: int) -> None:
        from llm_trainer.inference.generate import GenerationSettings, TextGenerator

        parts = trainer.parts
        generator = TextGenerator(parts.model, parts.tokenizer, parts.device.device)
        try:
            for i, prompt in enumerate(self.prompts):
                settings = GenerationSettings(max_new_tokens=self.tokens,
                                              temperature=self.temperature,
                                              seed=self.seed_for(step, i))
                text = generator.generate(prompt, settings)
                self.written += 1
                trainer.callbacks.on_sample(trainer, Sample(step=step, prompt=prompt,
                                                            text=text))
        finally:
            parts.model.train()
        self.last_step = step

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "written": self.written, "last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.written = int(state.get("written", 0))
        self.last_step = state.get("last_step")
