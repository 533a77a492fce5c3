// Collector and forecaster health, and the control plane's plumbing: scrape freshness, stale replicas, forecast
// coverage and error by resolution, NATS, leadership.
import type { Dashboard } from '@grafana/schema';
import { dashboard, grid, q, timeseries } from './lib';

const panels = grid(8, 12, [
  (at) => timeseries('Replica scrapes by result', 'The collector\'s scrapes of Triton /metrics.', at, 'reqps', [
    q('A', 'sum by (result) (rate(ebbflow_collector_scrapes_total[1m]))', '{{result}}'),
  ]),
  (at) => timeseries('Scrape freshness', 'Oldest successful scrape per model, and the p99 wall time of a round of scrapes.', at, 's', [
    q('A', 'max by (model) (ebbflow_replica_scrape_age_seconds)', '{{model}} oldest scrape'),
    q('B', 'histogram_quantile(0.99, sum by (le) (rate(ebbflow_collector_scrape_seconds_bucket[1m])))', 'round p99'),
  ]),
  (at) => timeseries('Load data: fresh and stale', '1 while the model\'s load is fresh (the scheduler holds at 0: EbbflowLoadDataStale); ready replicas whose metrics are stale.', at, 'short', [
    q('A', 'min by (model) (ebbflow_model_load_fresh)', '{{model}} fresh'),
    q('B', 'sum by (model) (ebbflow_model_stale_replicas)', '{{model}} stale replicas'),
  ]),
  (at) => timeseries('Scheduler holds', 'Ticks per second the scheduler held a model for missing or stale load.', at, 'short', [
    q('A', 'sum by (model) (rate(ebbflow_scheduler_holds_total[1m]))', '{{model}}'),
  ]),
  (at) => timeseries('Forecast coverage by resolution', 'Share of recent targets at or below each quantile forecast (target: the quantile; -1: too few targets yet).', at, 'percentunit', [
    q('A', 'ebbflow_forecaster_coverage', '{{model}} {{resolution}} s p{{quantile}}'),
  ]),
  (at) => timeseries('Forecast error by resolution', 'Mean absolute error of p50 forecasts over mean demand (-1: too few targets yet).', at, 'percentunit', [
    q('A', 'ebbflow_forecaster_relative_mae', '{{model}} {{resolution}} s'),
  ]),
  (at) => timeseries('Forecaster update time', 'p99 of one series update (all candidate models).', at, 's', [
    q('A', 'histogram_quantile(0.99, sum by (le) (rate(ebbflow_forecaster_update_seconds_bucket[5m])))', 'p99'),
  ]),
  (at) => timeseries('NATS connections', '1 while each service is connected to NATS (EbbflowNATSDisconnected).', at, 'short', [
    q('A', 'min by (service) (ebbflow_nats_connected)', '{{service}}'),
  ]),
  (at) => timeseries('Collector shards and history', 'Live collectors, models owned, and load history chunks written to JetStream.', at, 'short', [
    q('A', 'max(ebbflow_collector_members)', 'collectors'),
    q('B', 'sum(ebbflow_collector_owned_models)', 'models owned'),
    q('C', 'sum by (result) (rate(ebbflow_collector_history_writes_total[1m]))', 'history writes {{result}}'),
  ]),
  (at) => timeseries('Leadership and backlog', 'Schedulers holding the lease (should be 1) and registry writes the actuator still owes NATS.', at, 'short', [
    q('A', 'sum(ebbflow_scheduler_leader)', 'leaders'),
    q('B', 'max(ebbflow_actuator_registry_backlog)', 'actuator backlog'),
  ]),
]);

export const health: Dashboard = dashboard('ebbflow-health', 'ebbflow / Collector and forecaster health', 'Scrape freshness, stale replicas, forecast coverage and error by resolution, NATS, leadership.', panels, []);
