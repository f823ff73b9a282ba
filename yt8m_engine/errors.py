"""The project's one error type for user mistakes: bad files, bad options, bad submissions.

Its message names the file / record / option and what to do; the CLI prints it as one line.
"""


class Yt8mError(Exception):
    """A problem with the user's input or options (not a bug in yt8m-engine)."""
