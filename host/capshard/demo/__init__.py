"""The demo: a small fleet on this machine, driven through scenarios that
show traffic turning into needs, needs into plans, plans into running shards."""
