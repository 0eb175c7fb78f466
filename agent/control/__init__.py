"""The control socket: `agent status`, the TUI and scripts ask the running agent over a Unix socket.

protocol.py is the wire format and its errors, server.py the agent's side, client.py the callers' side,
methods.py the API the agent serves.
"""
