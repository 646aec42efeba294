"""Samples during training: training callbacks that write text with the KV-cache
generator. They live here, above training (they need the generator). The worker adds
``Sampler`` to a run's callbacks when ``train.sample_interval`` asks for samples, and
``FinalSample`` when the ``--foreground`` command that started it will print a sample at the
end (``FINAL_SAMPLE_ENV``)."""

from __future__ import annotations

import os
from typing import Any

from llm_trainer import launcher
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


FINAL_SAMPLE_ENV = launcher.FINAL_SAMPLE_ENV  # tokens; set for `train/resume --foreground`


def final_sample_settings(tokens: int):
    """How the sample at the end of a ``--foreground`` command is drawn: by the worker, or by
    the command itself (``cli.train._sample``, the same settings) when the worker wrote none."""
    from llm_trainer.inference.settings import GenerationSettings

    return GenerationSettings(max_new_tokens=tokens, temperature=0.8, top_k=200, seed=0)


class FinalSample(Callback):
    """The sample a ``--foreground`` command prints when its run completes, written by the
    worker from the model it has in memory, after the last checkpoint (the same weights), with
    the command's settings: ``tokens`` new tokens from the empty prompt (a chat model: a
    reply to the first held-out prompt, ``_chat_reply``), temperature 0.8,
    top-k 200, seed 0. The command then prints it from the run's state (``last_sample``, with
    ``final``) and needs neither torch nor the checkpoint: on a small CPU run that was most of
    its start-up (importing torch a second time, ~1.4 s, and loading the checkpoint).

    Nothing is written when the run did not complete, runs on several processes (the command
    samples itself then), or was asked to stop while sampling (Ctrl-C)."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    @classmethod
    def from_env(cls) -> FinalSample | None:
        try:
            tokens = int(os.environ.get(FINAL_SAMPLE_ENV, "0"))
        except ValueError:
            return None
        return cls(tokens) if tokens > 0 else None

    def on_end(self, trainer, result) -> None:
        if trainer is None or result is None or result.status != "completed" or \
                trainer.parts.dist.enabled or trainer.stop_requested():
            return
        from llm_trainer.inference.generate import TextGenerator

        parts = trainer.parts
        settings = final_sample_settings(self.tokens)
        generator = TextGenerator(parts.model, parts.tokenizer, parts.device.device)
        pieces = []
        try:
            for piece in (_chat_reply(generator, parts.data, settings)
                          if parts.data.chat is not None else generator.stream("", settings)):
                if trainer.stop_requested():
                    return
                pieces.append(piece)
        except KeyboardInterrupt:  # a second Ctrl-C: the run itself is complete and saved
            return
        trainer.callbacks.on_sample(trainer, Sample(step=result.step, prompt="",
                                                    text="".join(pieces), final=True))


def _chat_reply(generator, data, settings):
    """A chat model's sample: the first held-out conversation's prompt (as the model reads
    it, markers included) and the model's reply to it, up to its end of turn. From an empty
    prompt a chat model writes no conversation, only noise that looks like a failed run."""
    import numpy as np

    from llm_trainer.inference.chat import ChatSession

    width = data.window
    window = np.asarray(data.val[:width], dtype=np.int64)
    trained = np.flatnonzero(np.asarray(data.val_mask[:width], dtype=bool))
    if not len(trained):  # pragma: no cover - every window holds a trained target
        return
    ids = window[:trained[0]].tolist()
    yield generator.tokenizer.decode(ids)
    session = ChatSession(generator, data.chat)
    yield from session.pieces(ids, settings)
