"""Exceptions raised for problems a user can fix (bad input, bad options, existing outputs).

The CLI turns every :class:`RrsisError` into a one-line message and a non-zero exit code;
anything else is a bug.
"""


class RrsisError(Exception):
    """Base class of the errors a user can act on; its message is one line."""


class InputError(RrsisError):
    """The input raster, band list, expression or model cannot be used."""


class OutputError(RrsisError):
    """An output cannot be written (exists, unknown format, unwritable folder)."""


class RrsisWarning(UserWarning):
    """Base class of the warnings the CLI shows (other libraries' warnings are hidden)."""
