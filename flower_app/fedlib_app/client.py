"""The ClientApp: one round of the method's local work on this node's own data folder."""

from fedlib.flower.app import client_app

app = client_app()
