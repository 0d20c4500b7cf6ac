"""Scoring's rules: models, scores with explanations, AHP priorities and the ranking. Pure."""
