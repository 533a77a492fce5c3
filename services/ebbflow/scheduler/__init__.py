"""The scheduler: turns load and policies into desired state."""
