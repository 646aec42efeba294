"""The docs stay true to the code: every command, argument and option that ``--help`` shows is
in docs/cli.md under its command's heading, every config key is in its table, and every
relative link of README.md and docs/*.md leads to a file (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[2]
CLI_MD = ROOT / "docs" / "cli.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a command's section: "## `llm-trainer models`", "### `llm-trainer models export`"
COMMAND_HEADING = re.compile(r"^#{2,3} `(llm-trainer[^`]*)`[ \t]*$", re.MULTILINE)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)[ \t]*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def command_tree() -> list[tuple[str, list[str]]]:
    """(``llm-trainer models export``, the names its --help shows: each option's spellings and
    each argument's metavar) for the root, every group and every command, depth first."""
    from llm_trainer.cli import app

    found: list[tuple[str, list[str]]] = []

    def walk(cmd, path: str) -> None:
        names = []
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "argument":
                names.append(param.metavar or param.name.upper())
            else:
                names += [o for o in (*param.opts, *param.secondary_opts) if o != "--help"]
        found.append((path, names))
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            if not sub.hidden:
                walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "llm-trainer")
    return found


def sections(text: str) -> dict[str, str]:
    """Each command heading's text, up to the next command heading."""
    marks = list(COMMAND_HEADING.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)]
    # a table cell writes | as \|: read it as the --help text has it
    return {m.group(1): text[m.end():end].replace("\\|", "|")
            for m, end in zip(marks, ends, strict=True)}


def shown(name: str, section: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", section) is not None


def missing_from_cli_md(text: str) -> list[str]:
    by_command = sections(text)
    missing = []
    for path, names in command_tree():
        section = by_command.get(path)
        if section is None:
            missing.append(f"`{path}` (no section headed `{path}`)")
            continue
        missing += [f"`{path}` {name}" for name in names if not shown(name, section)]
    return missing


def test_every_command_and_option_of_help_is_in_cli_md():
    missing = missing_from_cli_md(CLI_MD.read_text(encoding="utf-8"))
    assert not missing, "docs/cli.md lacks:\n  " + "\n  ".join(missing)


def test_the_check_finds_a_missing_option():
    text = CLI_MD.read_text(encoding="utf-8")
    cut = re.sub(r"(?<![\w-])--restart-schedule(?![\w-])", "", text)
    assert missing_from_cli_md(cut) == ["`llm-trainer resume` --restart-schedule"]


def test_every_config_key_is_in_cli_md():
    from llm_trainer.config import all_keys

    text = CLI_MD.read_text(encoding="utf-8")
    missing = [key for key in all_keys() if f"`{key}`" not in text]
    assert not missing, f"docs/cli.md (Config keys) lacks: {', '.join(missing)}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_relative_links_lead_to_files_and_headings_that_exist():
    broken = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not dest.exists():
                broken.append(f"{where} no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} no such heading in {dest.name}")
    assert not broken, "broken links:\n  " + "\n  ".join(broken)


def test_the_docs_pages_exist():
    names = {p.name for p in PAGES}
    assert {"cli.md", "fine-tuning.md", "data.md", "distributed.md", "export.md",
            "on-disk-format.md", "architecture.md"} <= names


def test_architecture_names_places_that_exist():
    """Each row of "One place for each rule" names modules that exist and, in them, the
    names it gives (`TrainConfig.planned_steps()`: a planned_steps defined in config.py)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## One place for each rule", 1)[1].split("\n## ", 1)[0]
    wrong = []
    for rule, place in re.findall(r"^\| (.+?) \| (.+?) \|$", table, re.MULTILINE)[1:]:
        codes = re.findall(r"`([^`]+)`", place)
        modules = [c for c in codes if c.endswith(".py")]
        files = [ROOT / "src" / "llm_trainer" / m for m in modules]
        if not files or not all(f.is_file() for f in files):
            wrong.append(f"{rule}: no module {', '.join(modules) or '(none named)'}")
            continue
        source = "\n".join(f.read_text(encoding="utf-8") for f in files)
        for code in (c for c in codes if not c.endswith(".py")):
            name = code.removesuffix("()").rsplit(".", 1)[-1]
            if not re.search(rf"^\s*(def|class) {name}\b|^{name}\b[^=\n]*=", source,
                             re.MULTILINE):
                wrong.append(f"{rule}: {code} is not defined in {', '.join(modules)}")
    assert not wrong, "docs/architecture.md names what is not there:\n  " + "\n  ".join(wrong)


def test_the_readme_says_how_to_get_the_command_on_its_first_screen():
    """After `make run`, `llm-trainer` is in .venv/bin only: the first screen (24 lines)
    shows the set-up commands and how to put the command on the PATH."""
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:24])
    for command in ("make run", "make test", "source .venv/bin/activate"):
        assert command in first_screen, command
