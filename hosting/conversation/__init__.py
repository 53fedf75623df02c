"""The socket conversation (handshakes, turns, viewers, seal), shared by /ws and relayed sockets."""
