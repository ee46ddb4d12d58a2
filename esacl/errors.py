"""What every layer raises for a user's mistake, and the hint it gives: imported by modules below
`config` (data, methods, presets, prune, selection) so that none of them imports `config`."""

import difflib


class UserError(Exception):
    """A mistake in what the user asked for: shown as one line, never as a traceback."""


def did_you_mean(word: str, names) -> str:
    """' (did you mean 'X'?)' for the closest of `names` to a mistyped `word`, or ''."""
    near = difflib.get_close_matches(word, list(names), n=1)
    return f" (did you mean '{near[0]}'?)" if near else ""
