# Misbehaving shards that the CMM tests use to prove containment.
