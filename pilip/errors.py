"""The one exception type that the command line turns into a one-line error."""


class PilipError(Exception):
    """Bad input or a failed precondition, detected before expensive work starts.

    The message must fit on one line and name the file or config key at fault and the fix.
    The command line prints it as ``pilip <command>: error: <message>`` and exits with 2.
    """
