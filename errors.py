"""The one exception type for mistakes a user can make (bad config, missing file, wrong checkpoint).

Entry points catch it and print its message on one line with a non-zero exit instead of a traceback.
"""


class UserError(Exception):
    """A problem with the user's input: the message names the offending key, file or value."""
