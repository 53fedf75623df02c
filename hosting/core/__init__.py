"""The turn core: config, runtime, intake, turns, agents, events, throttle, uploads, records of activity."""
