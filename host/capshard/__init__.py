"""capshard, provider side: catalog, allocator, fleet service and tooling."""

__version__ = "0.1.0"
