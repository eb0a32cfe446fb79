class UnimpError(Exception):
    """An error the user can fix; the CLI prints its message as one sentence and exits non-zero."""


class MissingResource(UnimpError):
    """A system resource a metric needs is not installed (e.g. WordNet for METEOR). Scoring records
    the metric as missing with this message, unless --strict-metrics makes it an error."""
