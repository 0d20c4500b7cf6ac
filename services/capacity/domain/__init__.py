"""Capacity's rules: capacity from resources, the greedy plan, its analysis (utilisation,
conflicts, skill gaps), the exact optimiser and what-if scenarios. Pure."""
