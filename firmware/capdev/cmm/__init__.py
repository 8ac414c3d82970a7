# Capability Management Module: verified instructions -> running shards.
