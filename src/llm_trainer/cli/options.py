"""Options more than one command takes: --config, --preset, --set, the distributed ones, and
the launch-options table (``app/options.py``) as Typer options.

``launch_options(...)`` gives a command the table's options as its own: Typer reads the
command's ``__signature__``, built here from the table, and the command receives what the
user gave as one ``LaunchOptions`` (``options=``); `train` also gets ``auto_batch=`` for
``--batch-size auto``. Each flag is parsed here, at the edge, into the typed field.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from llm_trainer.app.options import (
    BY_NAME,
    DATA_OPTIONS,
    LAUNCH_OPTIONS,
    DataOptions,
    LaunchOption,
    LaunchOptions,
    preset_help,
)
from llm_trainer.errors import UsageError
from llm_trainer.service import GenerationSettings


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """``--set section.key=value`` (repeatable) -> {"section.key": value}, as typed."""
    from llm_trainer.config import parse_set

    return parse_set(sets or [])


ConfigOpt = Annotated[str | None, typer.Option("--config", help="YAML config file")]


PresetOpt = Annotated[str | None, typer.Option("--preset", help=preset_help())]


def _profile_help() -> str:
    """``--profile``'s help, with the packaged profiles' names (a folder listing, no YAML
    read: --help stays fast)."""
    from llm_trainer.profiles import list_profiles

    names = "|".join(list_profiles()) or "none found"
    return (f"use-case profile, a fine-tuning overlay over the preset ({names}, or your own "
            "in configs/profiles/): LoRA rank/alpha/targets, lr, epochs, loss_on, context and "
            "sampling, each with its reason (see them with --dry-run); needs --init-from; "
            "options and --set win over it")


ProfileOpt = Annotated[str | None, typer.Option("--profile", help=_profile_help())]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="any config key: --set section.key=value (repeatable), e.g. "
                  "--set train.weight_decay=0.05")]


def typer_parameter(opt: LaunchOption) -> inspect.Parameter:
    """The Typer option of one row: a bool is an on-only flag, a tuple a repeatable option,
    anything else a value (None when not given)."""
    info = typer.Option(opt.flag, help=opt.help)
    if opt.flag_type is bool:
        annotation, default = Annotated[bool, info], False
    elif opt.type == tuple[str, ...]:
        annotation, default = Annotated[list[str] | None, info], None
    else:
        annotation, default = Annotated[opt.flag_type | None, info], None
    return inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


def batch_size_option(value: str | None) -> tuple[bool, int | None]:
    """``--batch-size``: a whole number >= 1 or ``auto`` -> (auto, number)."""
    if value is None:
        return False, None
    if value.strip().lower() == "auto":
        return True, None
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"--batch-size must be a whole number or auto (got {value!r})"
                         ) from None
    return False, number


def options_from_flags(values: dict[str, Any]) -> tuple[LaunchOptions, bool]:
    """What Typer parsed for the table's options -> (LaunchOptions, --batch-size auto)."""
    auto_batch = False
    typed: dict[str, Any] = {}
    for name, value in values.items():
        opt = BY_NAME[name]
        if name == "batch_size":
            auto_batch, value = batch_size_option(value)
        elif opt.flag_type is bool:
            value = True if value else None  # an on-only flag: off is "not given"
        elif isinstance(value, list):
            value = tuple(value) or None
        typed[name] = value
    return LaunchOptions(**typed), auto_batch


def _inject(func: Callable, params: list[inspect.Parameter], after: str, takes: tuple[str, ...],
            collect: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable:
    """``func`` with ``params`` added to its Typer signature after its parameter ``after``;
    what the user gave for them goes through ``collect`` into the keyword arguments
    ``takes`` of ``func`` (which Typer does not see)."""
    names = {p.name for p in params}
    own = [p for p in inspect.signature(func, eval_str=True).parameters.values()
           if p.name not in takes]
    at = next(i for i, p in enumerate(own) if p.name == after) + 1
    merged = [*own[:at], *params, *own[at:]]

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in names}
        return func(**kwargs, **collect(given))

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in merged])
    return command


def launch_options(*names: str, after: str) -> Callable[[Callable], Callable]:
    """Decorate a command: it takes the table's options ``names`` (all when none is named),
    placed after its parameter ``after`` in ``--help``, and receives them as
    ``options: LaunchOptions`` (and ``auto_batch: bool`` when ``batch_size`` is one)."""
    rows = [BY_NAME[n] for n in names] if names else list(LAUNCH_OPTIONS)
    with_auto = any(o.name == "batch_size" for o in rows)

    def collect(given: dict[str, Any]) -> dict[str, Any]:
        options, auto_batch = options_from_flags(given)
        return {"options": options, **({"auto_batch": auto_batch} if with_auto else {})}

    return lambda func: _inject(func, [typer_parameter(o) for o in rows], after,
                                ("options", "auto_batch"), collect)


def data_options(after: str) -> Callable[[Callable], Callable]:
    """Decorate a command: it takes the data.* options of ``DataOptions`` (--tokenizer,
    --vocab-size, --val-fraction, --text-column; their help is the config fields'), after its
    parameter ``after``, and receives them as ``options: DataOptions``."""
    def collect(given: dict[str, Any]) -> dict[str, Any]:
        return {"options": DataOptions(**given)}

    return lambda func: _inject(func, [typer_parameter(o) for o in DATA_OPTIONS], after,
                                ("options",), collect)


DIST_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                      annotation=Annotated[kind, typer.Option(flag, help=text)])
    for name, kind, default, flag, text in (
        ("nproc", int, 1, "--nproc",
         "processes on this machine (one per GPU; CPU: gloo), through torchrun"),
        ("nnodes", int, 1, "--nnodes", "machines taking part"),
        ("node_rank", int, 0, "--node-rank", "this machine's index (0 first)"),
        ("master_addr", str | None, None, "--master-addr",
         "address of machine 0 (several machines)"),
        ("master_port", int | None, None, "--master-port",
         "a free TCP port on machine 0 (several machines)"))]


def dist_options(after: str) -> Callable[[Callable], Callable]:
    """Decorate a command: it takes --nproc, --nnodes, --node-rank, --master-addr and
    --master-port (after its parameter ``after``) and receives them as ``dist: DistLaunch``."""
    def collect(given: dict[str, Any]) -> dict[str, Any]:
        from llm_trainer.launcher import DistLaunch

        return {"dist": DistLaunch(given["nproc"], given["nnodes"], given["node_rank"],
                                   given["master_addr"], given["master_port"])}

    return lambda func: _inject(func, DIST_PARAMETERS, after, ("dist",), collect)


GENERATION_PARAMETERS = [  # defaults: GenerationSettings' own, which exports write too
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                      default=getattr(GenerationSettings(), name),
                      annotation=Annotated[kind, typer.Option(flag, help=text)])
    for name, kind, flag, text in (
        ("max_new_tokens", int, "--max-new-tokens", "tokens to generate"),
        ("temperature", float, "--temperature", "0 is greedy"),
        ("top_k", int | None, "--top-k", "sample among the k likeliest"),
        ("top_p", float | None, "--top-p", "nucleus sampling mass"),
        ("repetition_penalty", float, "--repetition-penalty", "> 1 discourages repeats"),
        ("seed", int | None, "--seed", "seed for reproducible sampling"))]


def generation_options(after: str) -> Callable[[Callable], Callable]:
    """Decorate a command: it takes the sampling options of `generate` (--max-new-tokens,
    --temperature, --top-k, --top-p, --repetition-penalty, --seed), after its parameter
    ``after``, and receives them as ``settings: GenerationSettings``."""
    def collect(given: dict[str, Any]) -> dict[str, Any]:
        return {"settings": GenerationSettings(**given)}

    return lambda func: _inject(func, GENERATION_PARAMETERS, after, ("settings",), collect)
