"""Talk to a hosted agent: ``connect("0x<address>")`` or ``connect("http://host:port")``, then ``.input(prompt)``.

``hosting.client.remote`` holds the agents (blocking and async), ``lookup`` finds where an agent is,
``sockets`` the errors and the sealed socket.
"""

from hosting.client.lookup import resolve_direct, sort_endpoints
from hosting.client.remote import MAX_SIZE, AsyncRemoteAgent, RemoteAgent, aconnect, connect
from hosting.client.sockets import AgentNotConnected, AnswerRequired, RemoteAgentError, SealedSocket

__all__ = [
    "MAX_SIZE",
    "AgentNotConnected",
    "AnswerRequired",
    "AsyncRemoteAgent",
    "RemoteAgent",
    "RemoteAgentError",
    "SealedSocket",
    "aconnect",
    "connect",
    "resolve_direct",
    "sort_endpoints",
]
