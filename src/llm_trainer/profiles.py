"""Use-case profiles: a fine-tuning recipe per job (chatbot, code, summarize, qa, creative,
domain), shipped as YAML overlays in ``configs/profiles/`` (a home's own in
``<home>/configs/profiles/``, found first, as presets are).

A profile sits between the preset and the command line (``config.py`` has the layering), so
``--preset`` still gives the machine-sized settings (batch size, evaluation) and a flag or
``--set`` still wins over any value of it. Each value must say why it is what it is: the file
holds ``section: {key: {value: V, why: ONE LINE}}``, and ``train --dry-run`` shows every value
with its reason. A key without a reason, a key the config does not know or a value it refuses
is an error naming the file and the key. No torch.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_trainer.config import SECTIONS, RunConfig, load_yaml, preset_dirs, typed_value
from llm_trainer.errors import ConfigError, UsageError

PROFILE_DIR = "profiles"  # under each preset folder
# keys the command line records: a profile setting them would claim what it did not do
RECORDED = ("finetune.init_from", "finetune.profile")
ENTRY_KEYS = ("value", "why")


@dataclass(frozen=True)
class ProfileValue:
    key: str  # "train.lr"
    value: Any  # typed as the config field is (a tuple for lists)
    why: str  # one line: the reason for this value
    note: str | None = None  # what the planner changed, e.g. a context cut to the model's


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    path: Path
    values: tuple[ProfileValue, ...]

    def overrides(self) -> dict[str, Any]:
        """The values as ``apply_overrides`` takes them (lists as lists)."""
        return {v.key: list(v.value) if isinstance(v.value, tuple) else v.value
                for v in self.values}

    def get(self, key: str) -> ProfileValue | None:
        return next((v for v in self.values if v.key == key), None)

    def with_value(self, key: str, value: Any, note: str) -> Profile:
        """This profile with ``key`` changed to ``value`` and the reason for the change."""
        values = tuple(dataclasses.replace(v, value=value, note=note) if v.key == key else v
                       for v in self.values)
        return dataclasses.replace(self, values=values)


def profile_dirs(home: Path | None = None) -> list[Path]:
    """``profiles/`` of each preset folder: the home's first, then the packaged ones."""
    return [d / PROFILE_DIR for d in preset_dirs(home) if (d / PROFILE_DIR).is_dir()]


def list_profiles(home: Path | None = None) -> list[str]:
    """The profiles' names (no file is read: ``--help`` lists them)."""
    return sorted({p.stem for d in profile_dirs(home) for p in d.glob("*.yaml")})


def load_profile(name: str, home: Path | None = None) -> Profile:
    """The profile ``name``, read and checked; an unknown name is one line with the close
    matches and the list."""
    for d in profile_dirs(home):
        path = d / f"{name}.yaml"
        if path.is_file():
            return read_profile(path)
    known = list_profiles(home)
    close = difflib.get_close_matches(name, known, n=2)
    like = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise UsageError(f"unknown profile {name!r}{like}; the profiles: "
                     f"{', '.join(known) or 'none found'}")


def read_profile(path: Path) -> Profile:
    """A profile file, every value typed by the config's own rules and every key with its
    reason; an error names the file and the key."""
    source = str(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a profile is a mapping: description, then sections")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(f"{source}: description is missing",
                          hint="description: one line on what the profile is for")
    values: list[ProfileValue] = []
    for section, entries in data.items():
        if section == "description":
            continue
        if section not in SECTIONS:
            close = difflib.get_close_matches(str(section), [*SECTIONS, "description"], n=1)
            raise ConfigError(f"{source}: unknown section {section!r}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""),
                              hint=f"allowed: description, {', '.join(SECTIONS)}")
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f"{source}: section {section!r} must map keys to "
                              "{value: ..., why: ...}")
        for name, entry in entries.items():
            key = f"{section}.{name}"
            if key in RECORDED:
                raise ConfigError(f"{source}: {key} is recorded from the command line; a "
                                  "profile cannot set it")
            values.append(_entry(source, key, entry))
    if not values:
        raise ConfigError(f"{source}: the profile sets no values")
    try:  # the checks across keys (LoRA target names, attention heads)
        RunConfig().replace(**{v.key: v.value for v in values})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}", hint=exc.hint) from None
    return Profile(name=path.stem, description=description.strip(), path=path,
                   values=tuple(values))


def _entry(source: str, key: str, entry: Any) -> ProfileValue:
    form = "write it as {value: ..., why: one line on why}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: {key} has no reason", hint=form)
    unknown = [k for k in entry if k not in ENTRY_KEYS]
    if unknown:
        raise ConfigError(f"{source}: {key} has an unknown field {unknown[0]!r}", hint=form)
    if "value" not in entry:
        raise ConfigError(f"{source}: {key} has no value", hint=form)
    why = entry.get("why")
    if not isinstance(why, str) or not why.strip():
        raise ConfigError(f"{source}: {key} has no reason", hint=form)
    if "\n" in why.strip():
        raise ConfigError(f"{source}: {key}'s reason must be one line")
    return ProfileValue(key, typed_value(key, entry["value"], source=source), why.strip())
