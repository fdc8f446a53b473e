"""One error tree for the whole core; each door maps it to its protocol once.

DIMSE: ``dimse.status`` turns these into C-STORE/C-FIND statuses.
HTTP: ``web.app`` registers one exception handler per class.
"""


class MinipacsError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidInstance(MinipacsError):
    """The bytes are not an acceptable DICOM instance (unreadable, missing or bad UIDs)."""


class InvalidAttribute(InvalidInstance):
    """A required attribute (e.g. a UID) is missing or has an invalid value."""


class NotFound(MinipacsError):
    """The study, series, instance or frame asked for is not in the archive."""


class QueryError(MinipacsError):
    """A query names an unknown attribute or carries a value that cannot be matched."""


class StorageError(MinipacsError):
    """The blob store or the index could not complete an operation; retrying may help."""


class Conflict(MinipacsError):
    """The instance clashes with what is stored (e.g. same SOP Instance UID, other bytes)."""


class PreconditionFailed(Conflict):
    """The client's version of a resource (If-Match) is not the current one (HTTP 412)."""


class Forbidden(MinipacsError):
    """The caller is not allowed to do this."""


class NotAcceptable(MinipacsError):
    """The representation the client asked for cannot be produced (HTTP 406)."""


class InvalidRequest(QueryError):
    """An administrative request (AE registry, worklist item) carries an impossible value.

    A QueryError subclass so every door already maps it as a client error (HTTP 400)."""


class Unauthenticated(MinipacsError):
    """No credentials, or credentials that are wrong, expired, revoked or locked (HTTP 401)."""


class IdentityProviderError(MinipacsError):
    """The OpenID Provider single sign-on relies on did not answer, or answered what no
    provider should (HTTP 502): the caller's credentials were not judged at all."""


class IncompleteInstance(InvalidInstance):
    """The bytes cannot be read back whole: an element's declared length runs past what
    was received, a delimiter or the end of a deflate stream is missing, or the data set
    is not encoded as its file meta's TransferSyntaxUID says. Refused at ingest."""
