"""The long-running loop and its wiring: polling, signals, start-up checks."""
