"""Our relay server: announce registry, routes and consumers (the agent's link is hosting.relay)."""
