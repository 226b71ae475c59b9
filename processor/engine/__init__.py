"""The engine: what happens to one cancel request, step by step, and the guards around vendors."""
