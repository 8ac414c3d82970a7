"""The capability catalog and the service agreements (tiers).

    from capshard.catalog import load_catalog, load_agreements
    catalog = load_catalog("catalog.toml")
    tiers = load_agreements("agreements.toml", catalog)   # {tier name: Agreement}

Both raise CatalogError naming the file, the entry and the field.
"""

import os

from .errors import CatalogError, DeviceError, InputError, NeedsError
from .loader import baseline_problem, parse_agreements, parse_catalog
from .loader import load_agreements as _load_agreements
from .loader import load_catalog as _load_catalog
from .schema import Agreement, Board, Capability, Catalog, Shard, Slot

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
DEFAULT_CATALOG = os.path.join(DATA_DIR, "catalog.toml")
DEFAULT_AGREEMENTS = os.path.join(DATA_DIR, "agreements.toml")


def load_catalog(path=DEFAULT_CATALOG):
    return _load_catalog(path)


def load_agreements(path=DEFAULT_AGREEMENTS, catalog=None):
    """{tier name: Agreement}; the catalog defaults to the shipped one."""
    return _load_agreements(path, catalog if catalog is not None else load_catalog())


__all__ = [
    "Agreement", "Board", "Capability", "Catalog", "CatalogError", "DeviceError", "InputError",
    "NeedsError", "Shard", "Slot", "baseline_problem", "load_agreements", "load_catalog",
    "parse_agreements", "parse_catalog", "DEFAULT_CATALOG", "DEFAULT_AGREEMENTS",
]
