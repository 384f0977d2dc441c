"""The errors of the platform client: one class per thing a caller decides differently on.

A caller refreshes the goal state on ResourceGoneError / InvalidContainerError, keeps its
last-known-good goal state on DocumentError, and retries later (next loop iteration) on
HttpError. Every message names the request with SAS signatures redacted.
"""

from typing import Optional


class PlatformError(Exception):
    """Anything the platform client could not do."""


class DocumentError(PlatformError):
    """A document from the platform is unusable (malformed, missing a required field, DTD...).

    `document` names it (GoalState, ExtensionsConfig, ...), `reason` says what is wrong.
    """

    def __init__(self, document: str, reason: str):
        super().__init__("%s: %s" % (document, reason))
        self.document = document
        self.reason = reason


class NoRoleInstanceError(DocumentError):
    """A goal state without RoleInstance (the platform is still building it): refetch."""


class HttpError(PlatformError):
    """A request failed for good: a non-retryable status, or the attempts ran out."""

    def __init__(self, message: str, status: Optional[int] = None, attempts: int = 0):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class ResponseTooLargeError(HttpError):
    """The body went past its cap; it was not read whole."""


class ResourceGoneError(HttpError):
    """410 Gone: the goal state (or the HostGAPlugin's container headers) is stale."""


class InvalidContainerError(HttpError):
    """400 with InvalidContainerConfiguration: same handling as 410."""


class ProtocolNotFoundError(PlatformError):
    """No WireServer answered on any candidate endpoint within the detection attempts."""


class CertificateError(PlatformError):
    """The Certificates payload could not be decrypted or read, or the transport key is unusable."""
