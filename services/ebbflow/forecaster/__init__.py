"""The forecaster: demand series binned from load snapshots, forecast with calibrated quantiles."""
