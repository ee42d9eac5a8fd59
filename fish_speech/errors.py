"""Errors that the command line reports as one clear line instead of a traceback."""


class UserError(Exception):
    """Bad input or set-up that the user can fix: the message names the file and the problem.

    `exit_status` is the command's exit status (2: bad input; 1: the input was read but nothing
    in it is usable, e.g. no usable clip).
    """

    def __init__(self, message: str, exit_status: int = 2) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def load_failure(error: BaseException) -> str:
    """One line saying why `torch.load(..., weights_only=True)` failed, for a UserError naming the file.

    torch's own message for a non-checkpoint file is several lines of advice about `weights_only=False`,
    which is not what a user with a wrong or corrupt file needs (and not safe advice).
    """
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:  # e.g. "Unsupported operand 238" (random bytes), "Unsupported global: ..."
        detail = next((line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()), "")
        return f"not a weights-only torch checkpoint ({detail})" if detail else "not a torch checkpoint"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = first.split(". ", 1)[0]  # torch's zip errors go on with a paragraph of guesses
    return f"not a torch checkpoint, or a damaged one ({type(error).__name__}{': ' + first if first else ''})"
