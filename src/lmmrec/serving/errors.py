"""The one exception of the service: a request it cannot answer, with the field and the fix."""

from __future__ import annotations

from lmmrec.errors import DataError


class RequestError(DataError):
    """A request the service cannot answer: names the field, the problem and the fix.

    ``status`` is the HTTP status the API answers with (404: an id is not in the bundle, 409:
    the bundle cannot place new items, 413: an image over the size limit, 422: any other bad
    value).
    """

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status
