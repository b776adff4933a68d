"""The one error of the TVM backend, below both compiling and tuning (which raise it)."""


class TvmError(RuntimeError):
    """A model TVM cannot import or compile for the target; the message says which step failed."""
