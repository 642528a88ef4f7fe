"""The web layer: the Starlette app, its websocket handler, and the Serve ingress."""
