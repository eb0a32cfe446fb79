class UnimpError(Exception):
    """An error the user can fix; the CLI prints its message as one sentence and exits non-zero."""
