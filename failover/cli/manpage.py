"""Man pages generated from the programs' argparse definitions: one source of truth.

``python -m failover.cli.manpage DIR`` writes DIR/NAME.1 for every program of
failover/cli/launch.py, from ``build_parser()`` of failover/cli/NAME.py: the synopsis is
argparse's usage, OPTIONS lists every argument with its help (defaults expanded as
``--help`` shows them), and the epilog becomes its sections (examples, exit codes, ...).
setup.py runs it at build time (``build_man``), so ``pip install .`` and the Debian
package install the pages under share/man/man1.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

from failover import __version__
from failover.cli.launch import PROGRAMS

SECTION = "1"
SEE_ALSO_DOCS = "/usr/share/doc/failover (docs/ in the source)"


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(program, its parser) for every program.  Only the parsers are built: a Python
    without tkinter (Debian's python3 without python3-tk, in a build environment) gets an
    empty stand-in module, since no parser touches Tcl."""
    try:
        import tkinter  # noqa: F401
    except ImportError:
        sys.modules["tkinter"] = types.ModuleType("tkinter")
    for program in PROGRAMS:
        module = importlib.import_module(f"failover.cli.{program}")
        yield program, module.build_parser()


def escape(text: str) -> str:
    """Roff-safe text: backslashes, hyphens (so options copy and paste), leading dots."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def expand_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text as ``--help`` shows it (%(default)s and friends expanded)."""
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = parser.prog
    for key, value in list(params.items()):
        if hasattr(value, "__name__"):
            params[key] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    return action.help % params


def invocation(action: argparse.Action) -> str:
    """``\\fB\\-c\\fR \\fIFILE\\fR, \\fB\\-\\-communities\\fR \\fIFILE\\fR`` or a positional's name."""
    if not action.option_strings:
        return f"\\fI{escape(metavar(action))}\\fR"
    if action.nargs == 0:
        return ", ".join(f"\\fB{escape(o)}\\fR" for o in action.option_strings)
    value = f"\\fI{escape(metavar(action))}\\fR"
    if action.nargs == "?":
        value = f"[{value}]"
    return ", ".join(f"\\fB{escape(o)}\\fR {value}" for o in action.option_strings)


def metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, tuple):
        return " ".join(action.metavar)
    if action.metavar is not None:
        return action.metavar
    return action.dest if not action.option_strings else action.dest.upper()


def epilog_sections(epilog: str) -> Iterator[tuple[str | None, str, bool]]:
    """(section title or None, text, preformatted) for each paragraph of an epilog.
    A paragraph whose first line is ``words:`` alone starts a section (``examples:`` ->
    EXAMPLES); a paragraph with indented lines is kept as it is laid out."""
    for paragraph in re.split(r"\n\s*\n", epilog.strip("\n")):
        lines = paragraph.split("\n")
        title = None
        heading = re.fullmatch(r"([a-z][a-z ]*):", lines[0].strip())
        if heading and not lines[0].startswith(" "):
            title, lines = heading.group(1).upper(), lines[1:]
        text = "\n".join(lines)
        preformatted = any(line.startswith(" ") for line in lines) or bool(re.search(r"\S {2,}\S", text))
        yield title, text, preformatted


def synopsis(parser: argparse.ArgumentParser) -> str:
    """argparse's usage without 'usage: PROG', each [...] kept on one line."""
    usage = " ".join(parser.format_usage().split()[1 + len(parser.prog.split()):])
    depth, out = 0, []
    for ch in usage:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        out.append("\\ " if ch == " " and depth > 0 else escape(ch))
    return "".join(out)


def render(program: str, parser: argparse.ArgumentParser) -> str:
    """The man page of ``program`` as roff (man(7) macros)."""
    description = (parser.description or "").strip()
    out = [f'.TH {program.upper()} {SECTION} "" "failover {__version__}" "failover"',
           ".SH NAME", f"{escape(program)} \\- {escape(description.split('. ')[0].rstrip('.'))}",
           ".SH SYNOPSIS", ".nh", ".ad l",
           f"\\fB{escape(program)}\\fR " + synopsis(parser), ".ad", ".hy",
           ".SH DESCRIPTION", escape(description)]
    options = [a for a in parser._actions if a.help != argparse.SUPPRESS]
    positionals = [a for a in options if not a.option_strings]
    flags = [a for a in options if a.option_strings]
    for heading, actions in (("ARGUMENTS", positionals), ("OPTIONS", flags)):
        if actions:
            out.append(f".SH {heading}")
            for action in actions:
                out += [".TP", invocation(action), escape(expand_help(parser, action)) or "\\&"]
    out += commands(program, parser)
    section: str | None = None
    for title, text, preformatted in epilog_sections(parser.epilog or ""):
        if title is not None:
            out.append(f".SH {title}")
            section = title
        elif section is None:
            out.append(".SH NOTES")
            section = "NOTES"
        if not text.strip():
            continue
        if preformatted:
            out += [".PP", ".nf", escape(text), ".fi"]
        else:
            out += [".PP", escape(" ".join(text.split()))]
    others = [p for p in PROGRAMS if p != program]
    out += [".SH SEE ALSO", ",\n".join(f".BR {p} ({SECTION})" for p in others),
            ".PP", f"The failover documentation: {escape(SEE_ALSO_DOCS)}."]
    return "\n".join(out) + "\n"


def commands(program: str, parser: argparse.ArgumentParser) -> list[str]:
    """A COMMANDS section for a program with subcommands (failctl): each one's synopsis,
    description and options; options it shares with the program (given before or after
    the command) are listed once, under OPTIONS."""
    out: list[str] = []
    shared = {o for a in parser._actions for o in a.option_strings}
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        out.append(".SH COMMANDS")
        for name, sub in action.choices.items():
            out += [f".SS {escape(name)}", ".nh", ".ad l",
                    f"\\fB{escape(program)} {escape(name)}\\fR " + synopsis(sub), ".ad", ".hy",
                    ".PP", escape((sub.description or "").strip())]
            for a in sub._actions:
                if a.help == argparse.SUPPRESS or (a.option_strings and set(a.option_strings) <= shared
                                                   and a.option_strings != ["--help"]):
                    continue
                if a.option_strings == ["--help"]:
                    continue
                out += [".TP", invocation(a), escape(expand_help(sub, a)) or "\\&"]
            for _title, text, preformatted in epilog_sections(sub.epilog or ""):
                if text.strip():
                    out += ([".PP", ".nf", escape(text), ".fi"] if preformatted
                            else [".PP", escape(" ".join(text.split()))])
    return out


def write_all(directory: Path) -> list[Path]:
    """Write DIRECTORY/NAME.1 for every program; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for program, parser in parsers():
        path = directory / f"{program}.{SECTION}"
        path.write_text(render(program, parser), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m failover.cli.manpage",
                                description="Write the programs' man pages (NAME.1) into DIR.")
    p.add_argument("directory", type=Path, metavar="DIR")
    args = p.parse_args(argv)
    for path in write_all(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
