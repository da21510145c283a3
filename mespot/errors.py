"""The one exception type for mistakes a user can fix (bad file, bad setting).

Entry points print it as a single line and exit with status 2; anything else is a bug and
keeps its traceback.
"""


class UserError(ValueError):
    """A problem with the user's input, phrased so that its message alone says what to fix."""
