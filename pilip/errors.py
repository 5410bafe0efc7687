"""The one exception type that the command line turns into a one-line error."""


class PilipError(Exception):
    """Bad input or a failed precondition, detected before expensive work starts.

    The message must fit on one line and name the file or config key at fault and the fix.
    The command line prints it as ``pilip <command>: error: <message>`` and exits with 2.
    """


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type name when the message is empty): the
    reason a one-line error quotes from a library's multi-line exception."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
