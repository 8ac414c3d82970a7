# Shard code modules. The CMM loads only modules under this package, by name.
