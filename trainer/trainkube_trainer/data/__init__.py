"""Data: where examples come from, how they become token sequences, and in which order."""
