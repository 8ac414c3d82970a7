"""The provider's service: MQTT I/O around the fleet state and the allocator."""
