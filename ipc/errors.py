"""Error codes carried in a reply's `error.code`, and the exceptions that carry them."""

BAD_FRAME = "BAD_FRAME"          # not a frame: bad length, bad UTF-8, bad JSON, not an object
BAD_ENVELOPE = "BAD_ENVELOPE"    # a frame, but not a request/reply/notice of this version
UNKNOWN_VERB = "UNKNOWN_VERB"    # no such verb is declared
DENIED = "DENIED"                # declared, but this peer may not call it (now, or again)
INVALID_ARGS = "INVALID_ARGS"    # arguments do not match the verb's schema
FAILED = "FAILED"                # the verb ran and did not succeed; message says why
NOT_FOUND = "NOT_FOUND"          # the thing named (a worker, a file) does not exist
BUSY = "BUSY"                    # try again later
TIMEOUT = "TIMEOUT"              # the verb did not finish in its time
UNAVAILABLE = "UNAVAILABLE"      # the peer is gone or shutting down
INTERNAL = "INTERNAL"            # a bug on the answering side

CODES = frozenset((BAD_FRAME, BAD_ENVELOPE, UNKNOWN_VERB, DENIED, INVALID_ARGS, FAILED,
                   NOT_FOUND, BUSY, TIMEOUT, UNAVAILABLE, INTERNAL))

# Codes that mean the peer broke the protocol: on a worker channel they end the worker and are
# logged as a security event (DESIGN.md principle 5).
VIOLATIONS = frozenset((BAD_FRAME, BAD_ENVELOPE, UNKNOWN_VERB, DENIED, INVALID_ARGS))


class IpcError(Exception):
    """An error with a code from this module; what a reply's error object turns into."""

    def __init__(self, code: str, message: str):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message

    def to_dict(self):
        return {"code": self.code, "message": self.message}


class FrameError(IpcError):
    """The byte stream cannot be read any further; the channel must close."""

    def __init__(self, message: str):
        super().__init__(BAD_FRAME, message)
        self.frames = []


class ChannelClosed(IpcError):
    def __init__(self, message: str = "channel closed"):
        super().__init__(UNAVAILABLE, message)
