"""How to sample: the settings of a generation, torch-free (front ends build them through
the service without importing torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from llm_trainer.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class GenerationSettings:
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None

    def check(self) -> GenerationSettings:
        def bad(what: str, allowed: str) -> UsageError:
            return UsageError(f"{what} is not allowed: {allowed}")

        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise bad(f"--max-new-tokens {self.max_new_tokens}", "use a whole number >= 0")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise bad(f"--temperature {self.temperature}", "use a number >= 0 (0 is greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise bad(f"--top-k {self.top_k}", "use a whole number >= 1, or leave it out")
        if self.top_p is not None and not (0 < self.top_p <= 1):
            raise bad(f"--top-p {self.top_p}", "use a number in (0, 1]")
        if not math.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise bad(f"--repetition-penalty {self.repetition_penalty}",
                      "use a number > 0 (1 means none)")
        return self
