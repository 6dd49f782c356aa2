"""Errors meant for the user: the CLI prints them without a traceback, the UI shows them as messages."""


class UserError(Exception):
    """Something the user can fix: a bad file, an unknown model id, a missing folder."""
