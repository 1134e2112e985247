"""A thin Flower app: the ServerApp and ClientApp of the installed fedlib (fedlib.flower.app)."""
