"""The web-free core: the Redis contract (keys, wire, scripts), config, clients, the hub."""
