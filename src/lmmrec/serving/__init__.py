"""Serving: trained models as bundles (vectors, id maps, seen items), ranked by the one ranker.

``export_bundle`` writes a bundle from a run (with the encoder and content head that place new
items, for content models), :class:`Service` answers requests and adds items in-process,
:class:`Client` does the same in-process or over HTTP, and ``lmmrec serve`` puts the FastAPI app of
:mod:`lmmrec.serving.api` (the ``serve`` extra: ``pip install 'lmmrec[serve]'``) in front of it.
"""

from lmmrec.serving.bundle import Bundle, export_bundle, load_bundle
from lmmrec.serving.client import Client, item_content
from lmmrec.serving.service import Query, RequestError, Service

__all__ = [
    "Bundle",
    "Client",
    "Query",
    "RequestError",
    "Service",
    "export_bundle",
    "item_content",
    "load_bundle",
]
