"""Small, self-contained examples of the recurrent library (no data, no training)."""
