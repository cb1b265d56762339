"""Evaluation: acceptance metrics, calibration of the confidence head."""
