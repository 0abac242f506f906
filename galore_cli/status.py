"""The command line's exit statuses, its error and the shared ``--threads`` option: one home, imported by
``galore_cli.main`` and every sub-command module (evaluate, proxy, synthetic, train-hardness), so none of them
imports ``main`` back."""
from __future__ import annotations

EXIT_OK, EXIT_IMAGE_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_SERVICE_ERROR = 0, 1, 2, 3, 4
BAD_INPUT_CODES = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED",
                   "UNSUPPORTED_MEDIA_TYPE", "OUT_OF_RANGE"}
UNREACHABLE_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


class CliError(Exception):
    """Ends the command with ``status`` after printing ``message`` to stderr."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # pickles whole (a pinned worker process raises it, the command re-raises it)
        return self.__class__, (self.args[0], self.status)


def set_threads(threads: int | None) -> None:
    """``--threads N`` of the in-process commands (evaluate proxy, train-hardness): torch's CPU threads."""
    if threads is None:
        return
    if threads < 1:
        raise CliError(f"--threads: must be >= 1, got {threads}", EXIT_BAD_INPUT)
    __import__("torch").set_num_threads(threads)
