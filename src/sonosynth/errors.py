"""Errors that the CLI turns into a one-line message instead of a traceback."""


class SonosynthError(Exception):
    """A problem the user can fix; the message names the file and what to do."""


class ManifestError(SonosynthError):
    """A manifest that is malformed, inconsistent with disk, or inconsistent with itself."""


class InputDataError(SonosynthError):
    """Input data that cannot be used as given (source folder, metadata, output folder)."""
