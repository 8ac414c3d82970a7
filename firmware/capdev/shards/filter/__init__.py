# security-filtering shards.
