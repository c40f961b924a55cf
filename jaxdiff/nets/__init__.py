"""Networks shared by algorithms (no RL logic)."""
