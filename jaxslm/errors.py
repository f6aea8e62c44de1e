"""The one exception type jaxslm raises for bad user input."""


class JaxslmError(Exception):
    """Bad input from the user: the message names the file, the field and the fix."""
