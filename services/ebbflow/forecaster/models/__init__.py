"""Point forecasters of one demand series, as pure code.

Every model has the same life: `fit(history)` (on a schedule: estimates
parameters and sets the state from the history), `update(value)` (one new
observation, O(1), NaN allowed and meaning "missing"), `predict(horizon)`
(point forecasts for the next `horizon` steps, never negative). Fitting may
use statsmodels or scikit-learn; updating and predicting are a few numpy
operations, so a forecast costs microseconds, not a refit.

Missing data is never read as zero: recursions skip the correction step, and
fits interpolate over gaps.

Modules: `base` (the interface, interpolation), `smoothing` (last value,
moving average, EWMA, Holt-Winters), `arima`, `ridge` (LagRidge), and
`combiners`: two more candidates that combine the others' forecasts (the
selector sets their points each step, after the others'), the median and
Hedge, the error-weighted mix that selection falls back on. The candidate set
the forecaster runs is ebbflow.forecaster.selection.default_models.
"""
