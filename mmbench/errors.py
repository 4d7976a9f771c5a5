"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class MMBenchError(Exception):
    """An error the user can fix; the message says what to do."""


class TrainingDiverged(MMBenchError):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float):
        super().__init__(
            f"training diverged at epoch {epoch}, step {step} (loss={loss}); "
            "lower optim.lr or set optim.grad_clip"
        )
        self.epoch = epoch
        self.step = step


class ResultsNotWritable(MMBenchError):
    """A results file cannot be written (permissions, read-only or full disk): fatal for a sweep."""
