"""User-facing errors."""


class TraxError(Exception):
    """An error caused by the user's input or configuration.

    Its message is a single line that names the offending file (or config key) and the reason;
    rule scripts print it as is, without a traceback.
    """

    def __init__(self, subject: object, reason: str) -> None:
        self.subject = str(subject)
        self.reason = reason
        super().__init__(f"{self.subject}: {reason}")
