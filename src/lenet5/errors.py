"""One exception type for every mistake a user can make, so the CLI can print it as one sentence."""


def cannot_read(what: object, reason: object) -> str:
    """The sentence for a path that cannot be looked at, opened or read, and what to do."""
    return f"{what} cannot be read ({reason}); check the path and that you may read it."


class Lenet5Error(Exception):
    """A user-facing error: the message names the file or flag and says what to do next."""


class DataError(Lenet5Error):
    """A dataset file is missing, corrupt or fails its checksum."""


class ModelFileError(Lenet5Error):
    """A model file cannot be used: wrong format, version, architecture or content."""


class TrainingDiverged(Lenet5Error):
    """Training went wrong: a loss not finite or far above its start, or stuck at chance."""


class ImageError(Lenet5Error):
    """A user's image cannot be read or holds no digit."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, where a command handles it as Ctrl-C: the same advice, exit status 143."""
