# RNMA, the real-time network monitoring agent: traffic sources -> flow table
# -> classifier -> QoS report. Import the parts you need (monitor.Monitor is
# the core); nothing is imported here so a board loads only what it uses.
