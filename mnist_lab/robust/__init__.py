"""How a model fails beyond clean accuracy: corruptions, calibration, attacks, explanations."""
