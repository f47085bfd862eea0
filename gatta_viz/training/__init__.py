"""Training and evaluation: ``train``, ``evaluate`` (accuracy, noise, pass changes), ``export`` (ship a
checkpoint), ``recalibrate`` (re-estimate BatchNorm statistics, each pass its own)."""
