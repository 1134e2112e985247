"""The ServerApp: fedlib's strategy for the method named in the run config."""

from fedlib.flower.app import server_app

app = server_app()
