# Rewrites the DS field of IPv4 and IPv6 packets (RFC 2474), keeping the two
# ECN bits, and patches the IPv4 header checksum incrementally (RFC 1624).
# Pure functions on bytearrays.


class PacketError(ValueError):
    pass


def _v4_checksum_fix(pkt, old_word, new_word):
    # RFC 1624 eqn 3: HC' = ~(~HC + ~m + m')
    hc = (pkt[10] << 8) | pkt[11]
    s = (~hc & 0xFFFF) + (~old_word & 0xFFFF) + new_word
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    hc = ~s & 0xFFFF
    pkt[10] = hc >> 8
    pkt[11] = hc & 0xFF


def set_dscp(pkt, dscp):
    """Set the DSCP of the IP packet in bytearray ``pkt`` in place; returns the old DSCP."""
    if not 0 <= dscp < 64:
        raise PacketError("DSCP must be 0..63")
    if len(pkt) < 1:
        raise PacketError("empty packet")
    version = pkt[0] >> 4
    if version == 4:
        if len(pkt) < 20 or (pkt[0] & 0x0F) < 5:
            raise PacketError("IPv4 header too short")
        old_word = (pkt[0] << 8) | pkt[1]
        old = pkt[1] >> 2
        pkt[1] = (dscp << 2) | (pkt[1] & 0x03)
        _v4_checksum_fix(pkt, old_word, (pkt[0] << 8) | pkt[1])
        return old
    if version == 6:
        if len(pkt) < 40:
            raise PacketError("IPv6 header too short")
        tc = ((pkt[0] & 0x0F) << 4) | (pkt[1] >> 4)  # traffic class spans bytes 0 and 1
        old = tc >> 2
        tc = (dscp << 2) | (tc & 0x03)
        pkt[0] = 0x60 | (tc >> 4)
        pkt[1] = ((tc & 0x0F) << 4) | (pkt[1] & 0x0F)
        return old
    raise PacketError("not an IPv4 or IPv6 packet (version " + str(version) + ")")


def get_dscp(pkt):
    version = pkt[0] >> 4
    if version == 4:
        return pkt[1] >> 2
    if version == 6:
        return (((pkt[0] & 0x0F) << 4) | (pkt[1] >> 4)) >> 2
    raise PacketError("not an IPv4 or IPv6 packet (version " + str(version) + ")")
