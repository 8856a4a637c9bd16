"""Errors raised by prism, under Ray's names and prism's own.

Every error derives from ``RayError`` (also named ``PrismError``). A task that raised surfaces
as ``RayTaskError``, which is also an instance of the remote exception's type, as in Ray.
"""


class RayError(Exception):
    """Base class of prism's errors."""


class RayTaskError(RayError):
    """The remote function raised. ``cause`` is the remote exception (when it could be
    unpickled); ``str(err)`` includes the remote traceback."""

    def __init__(self, function_name, traceback_str, cause=None, cause_type_name=""):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.cause_type_name = cause_type_name or (type(cause).__qualname__ if cause is not None else "")
        super().__init__(self._message())

    def _message(self):
        return f"task {self.function_name} raised {self.cause_type_name}\n{self.traceback_str}".rstrip()

    def __str__(self):
        return self._message()

    def as_instanceof_cause(self):
        """This error, made an instance of the remote exception's class too (so that
        ``except ValueError`` catches a task's ValueError)."""
        cause = self.cause
        if cause is None or isinstance(cause, RayTaskError):
            return self
        cause_cls = type(cause)
        message = self._message()
        function_name, traceback_str, type_name = self.function_name, self.traceback_str, self.cause_type_name

        def __init__(err, cause_obj):
            err.cause = cause_obj
            err.function_name = function_name
            err.traceback_str = traceback_str
            err.cause_type_name = type_name
            err.args = (message,)

        def __getattr__(err, name):
            return getattr(err.cause, name)

        def __str__(err):
            return message

        name = f"RayTaskError({cause_cls.__name__})"
        try:
            cls = type(name, (RayTaskError, cause_cls),
                       {"__init__": __init__, "__getattr__": __getattr__, "__str__": __str__,
                        "__module__": __name__})
            return cls(cause)
        except TypeError:  # classes that cannot be subclassed, or layouts that conflict
            return self


class RayActorError(RayError):
    """The actor died (crash, kill, constructor error); calls to it fail."""


class GetTimeoutError(RayError, TimeoutError):
    """``get`` ran past its timeout."""


class WorkerCrashedError(RayError):
    """The worker running the task died and no retry was left."""


class ObjectLostError(RayError):
    """The object's value is gone."""


class OwnerDiedError(ObjectLostError):
    """The process that owned the object died."""


class TaskCancelledError(RayError):
    """The task was cancelled."""


class ObjectStoreFullError(RayError):
    """The object store has no room for the object."""


class CollectiveError(RayError):
    """A collective failed: a rank never joined, died or did not take part in time, or the group is
    broken by an earlier failure. The message names the group and the rank(s)."""


class RaySystemError(RayError):
    """prism itself failed (the node daemon is gone, a bad request)."""


class TaskUnschedulableError(RayError):
    """The task can never be placed as asked (a hard node affinity to a node that is gone)."""


class InfeasibleError(TaskUnschedulableError):
    """No node of the cluster can ever run the task (nor the hard node affinity's node, nor a
    node whose labels match its label_selector)."""


class ActorUnschedulableError(RayError):
    """The actor can never be placed as asked."""


# prism's names.
PrismError = RayError
PrismTaskError = RayTaskError
ActorDiedError = RayActorError
PrismSystemError = RaySystemError

__all__ = [
    "RayError", "RayTaskError", "RayActorError", "GetTimeoutError", "WorkerCrashedError",
    "ObjectLostError", "OwnerDiedError", "TaskCancelledError", "ObjectStoreFullError", "CollectiveError",
    "InfeasibleError", "RaySystemError", "PrismError", "PrismTaskError", "ActorDiedError",
    "PrismSystemError", "TaskUnschedulableError", "ActorUnschedulableError",
]
