# The traffic-shaping capability's shards: DSCP marker, token-bucket shaper,
# strict-priority scheduler (slots traffic-shaping.marker/.shaper/.scheduler).
