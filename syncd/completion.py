"""Shell completion scripts, derived from the command-line parser itself, so they
cannot drift from the commands: ``syncd completion bash|zsh|fish``.

Subcommands and their options are completed; an option that takes a file (``-c``)
completes file names, and one with choices completes them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

SHELLS = ("bash", "zsh", "fish")


@dataclass
class _Command:
    name: str
    help: str
    options: list[str] = field(default_factory=list)
    # Options whose value is a path, and options with a fixed set of values.
    paths: list[str] = field(default_factory=list)
    choices: dict[str, list[str]] = field(default_factory=dict)


def _commands(parser: argparse.ArgumentParser) -> list[_Command]:
    out: list[_Command] = []
    for action in parser._actions:  # argparse keeps its subparsers here, and nowhere else
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        for name, sub in action.choices.items():
            cmd = _Command(name, helps.get(name, ""))
            for a in sub._actions:
                if not a.option_strings:
                    continue
                cmd.options += a.option_strings
                if a.choices:
                    for opt in a.option_strings:
                        cmd.choices[opt] = [str(c) for c in a.choices]
                elif a.metavar in ("FILE", "DIR") or a.dest in ("config",):
                    cmd.paths += a.option_strings
            out.append(cmd)
    return out


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (one of SHELLS)."""
    commands = _commands(parser)
    if shell == "fish":
        return _fish(commands)
    bash = _bash(commands)
    if shell == "zsh":
        # zsh runs bash completion functions through its own bashcompinit.
        return "autoload -U +X bashcompinit && bashcompinit\n" + bash
    return bash


def _bash(commands: list[_Command]) -> str:
    names = " ".join(c.name for c in commands)
    cases = []
    for c in commands:
        value_cases = [f'            {" | ".join(c.paths)}) COMPREPLY=($(compgen -f -- "$cur")); '
                       "return ;;"] if c.paths else []  # fmt: skip
        value_cases += [
            f'            {opt}) COMPREPLY=($(compgen -W "{" ".join(values)}" -- "$cur")); '
            "return ;;"
            for opt, values in c.choices.items()
        ]
        cases.append(
            f"        {c.name})\n"
            '            case "$prev" in\n'
            + "".join(f"    {line}\n" for line in value_cases)
            + "            esac\n"
            f'            COMPREPLY=($(compgen -W "{" ".join(c.options)}" -- "$cur"))\n'
            "            [ ${#COMPREPLY[@]} -eq 0 ] && COMPREPLY=($(compgen -f -- \"$cur\"))\n"
            "            ;;\n"
        )
    return (
        "# syncd completion for bash: source <(syncd completion bash)\n"
        "_syncd() {\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"\n'
        "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
        f'        COMPREPLY=($(compgen -W "{names} --help --version" -- "$cur"))\n'
        "        return\n"
        "    fi\n"
        '    case "${COMP_WORDS[1]}" in\n' + "".join(cases) + "    esac\n"
        "}\n"
        "complete -F _syncd syncd\n"
    )


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(commands: list[_Command]) -> str:
    lines = ["# syncd completion for fish: syncd completion fish | source",
             "complete -c syncd -f"]  # fmt: skip
    for c in commands:
        lines.append(f"complete -c syncd -n __fish_use_subcommand -a {c.name} "
                     f"-d {_fish_quote(c.help)}")  # fmt: skip
        for opt in c.options:
            flag = f"-l {opt[2:]}" if opt.startswith("--") else f"-s {opt[1:]}"
            extra = ""
            if opt in c.paths:
                extra = " -r -F"
            elif opt in c.choices:
                extra = f" -r -a {_fish_quote(' '.join(c.choices[opt]))}"
            lines.append(f"complete -c syncd -n '__fish_seen_subcommand_from {c.name}' "
                         f"{flag}{extra}")  # fmt: skip
    return "\n".join(lines) + "\n"
