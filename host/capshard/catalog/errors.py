"""One error type per kind of bad input, each naming the culprit."""


class InputError(ValueError):
    """Bad input: names the source (file or payload), the entry and the field."""

    def __init__(self, source, entry, field, reason):
        self.source = source
        self.entry = entry
        self.field = field
        self.reason = reason
        where = ": ".join(part for part in (source, entry, field) if part)
        super().__init__(f"{where}: {reason}" if where else reason)


class CatalogError(InputError):
    """A catalog or agreements file (or a tier applied to a device) is wrong."""


class NeedsError(InputError):
    """A QoS needs report is malformed or names an unknown class."""


class DeviceError(InputError):
    """A device state (board, capacities, current profile) is malformed."""
