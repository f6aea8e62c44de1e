"""Every command's --help shows the default of each option that has one, once, in one layout
(jaxslm.cli_help.HelpFormatter), for every sub-command too, and names no option the command
lacks."""

import argparse
import importlib
import re

import pytest

from jaxslm.cli_help import HelpFormatter

COMMANDS = (
    "train",
    "generate",
    "evaluate",
    "vocode",
    "tokenize_audio",
    "data.build",
    "data.unit_pieces",
    "hf.cli",
    "scaling.__main__",
)

# (command, sub-command or None, an option's help as printed, whitespace collapsed)
LAYER_HELP = (
    "--layer LAYER HuBERT layer, indexed as transformers' hidden_states (0: the first "
    "layer's input, L: layer L's output) (default: 11)"
)
SAMPLES = (
    ("generate", None, "--n N continuations per prompt (default: 1)"),
    ("generate", None, "--seed SEED sampling seed (default: 0)"),
    ("generate", None, "--batch-size BATCH_SIZE prompts decoded together (default: 16)"),
    ("generate", None, "frame length of --prompt-units (default: 0.04)"),
    ("generate", None, LAYER_HELP),
    ("generate", None, "1 = off (default: 1.0)"),
    ("generate", None, "compute dtype (default: the dtype the model trained in)"),
    ("data.build", None, "are skipped (default: 500)"),
    ("data.build", None, "0.02 50 Hz) (default: 0.04)"),
    ("data.build", None, "validation split (default: 0.01)"),
    ("data.build", None, LAYER_HELP),
    ("data.build", None, "n-gram length of the repetition filter (default: 2)"),
    ("data.build", None, "threshold of the repetition filter (default: 0.3)"),
    ("tokenize_audio", None, "seconds of audio per batch (default: 120.0)"),
    ("tokenize_audio", None, "HuBERT compute dtype (default: float32)"),
    ("evaluate", None, LAYER_HELP),
    ("evaluate", None, "--temperature TEMPERATURE 0 = greedy (default: 0.8)"),
    ("evaluate", None, "(prompt->ending modality) (default: S->S S->T T->S T->T)"),
    ("vocode", None, "unit frames per vocoder batch (default: 2048)"),
    ("hf.cli", "export-hf", "at most this many GB (default: 5.0)"),
    ("hf.cli", "import-hf", "--seed SEED seed for new embedding rows (default: 0)"),
    ("scaling.__main__", "plan", "--aspect ASPECT shape rule: hidden size / layers (default: 85)"),
    ("scaling.__main__", "fit", "bootstrap resamples for intervals; 0: none (default: 100)"),
)
OTHER_COMMAND_OPTION = re.compile(  # "generate --prompt-units": another command's option
    rf"\b(?:{'|'.join(c.split('.')[-1] for c in COMMANDS)})\s+--[a-z][a-z0-9-]*"
)


def _parser(command: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser `main` of jaxslm.<command> builds, caught as it parses."""

    class Caught(Exception):
        pass

    caught = []

    def parse_args(self, *args, **kwargs):
        caught.append(self)
        raise Caught

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    with pytest.raises(Caught):
        importlib.import_module(f"jaxslm.{command}").main([])
    monkeypatch.undo()
    return caught[0]


def _with_subcommands(parser: argparse.ArgumentParser):
    yield None, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())


def test_every_option_with_a_default_shows_it_once(monkeypatch):
    for command in COMMANDS:
        for name, parser in _with_subcommands(_parser(command, monkeypatch)):
            where = f"{command} {name or ''}"
            assert parser.formatter_class is HelpFormatter, where
            formatter = parser._get_formatter()
            for action in parser._actions:
                if action.help == argparse.SUPPRESS or action.nargs == 0:
                    continue
                if action.default is None or action.default in ([], ()):
                    continue
                shown = formatter._expand_help(action) if action.help else ""
                assert "default" in shown, (where, action.option_strings)
                assert not ("(default: " in shown and re.search(r"\(default [^:]", shown)), shown


@pytest.mark.parametrize(("command", "sub", "line"), SAMPLES)
def test_help_shows_defaults(command, sub, line, monkeypatch):
    parser = dict(_with_subcommands(_parser(command, monkeypatch)))[sub]
    assert line in _help(parser)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_only_options_the_command_has(command, monkeypatch):
    parsers = dict(_with_subcommands(_parser(command, monkeypatch)))
    known = set().union(*map(_options, parsers.values()))
    for name, parser in parsers.items():
        text = OTHER_COMMAND_OPTION.sub("", parser.format_help())
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
        assert named <= known, (command, name, sorted(named - known))
