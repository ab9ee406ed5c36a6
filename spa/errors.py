"""Error types. Each carries the exit code the CLI uses for it."""


class SpaError(Exception):
    """A problem the user can act on: printed as one line, no traceback."""

    exit_code = 1


class UsageError(SpaError):
    """Bad arguments: ratio out of range, unknown criterion, bad shape spec."""

    exit_code = 2


class ModelError(SpaError):
    """The model file is missing, unreadable or not a valid ONNX model."""

    exit_code = 3


class NothingToPrune(SpaError):
    """No group of the model can be pruned with the given settings."""

    exit_code = 4


class VerifyError(SpaError):
    """The pruned model failed verification; nothing was written."""

    exit_code = 5


class TargetMissed(SpaError):
    """--target-latency: no plan reached the latency asked for; nothing was written."""

    exit_code = 6


INTERNAL_EXIT_CODE = 10


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when empty), cut to `limit`."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]
