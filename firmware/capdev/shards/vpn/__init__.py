# The VPN capability's shards: ciphers (vpn.cipher), the UDP tunnel
# (vpn.tunnel) and user authentication (vpn.auth), plus their shared helpers.
