"""The kit's one exception type: a user-facing, one-sentence error.

Anything the user can fix (a wrong name, a missing file, a checkpoint for another
architecture) raises `KitError` with a sentence that says what is wrong and what to do.
The command line prints that sentence alone, without a traceback.
"""


class KitError(Exception):
    """Bad input or state that the user can fix; the message says how."""
