"""The WebSocket door: Channels consumers, routing, dispatch and the frame budget."""
