"""Metrics: how faithful a map is (``faithfulness``: deletion/insertion, region perturbation, ROAD) and the
imputation ROAD uses (``imputation``)."""
