// One model (template variable `model`): demand against the forecast band, the SLO against its objectives,
// replicas with the scheduler's decisions as annotations, cold starts, held requests, Triton's own view.
import type { Dashboard } from '@grafana/schema';
import { annotation, dashboard, grid, modelVariable, q, stat, timeseries } from './lib';

const m = 'model="$model"';

const panels = grid(8, 12, [
  (at) => timeseries('Demand vs forecast', 'Arrival rate (collector) against the forecaster\'s quantiles at the end of its finest horizon (p50-p99 band). `ebbflow load $model` shows the series.', at, 'reqps', [
    q('A', `ebbflow_model_arrival_rps{${m}}`, 'demand'),
    q('B', `max by (quantile) (ebbflow_forecast_arrival_rps{${m}})`, 'forecast p{{quantile}}'),
  ]),
  (at) => timeseries('SLO attainment', 'Share of requests answered without a server error, and within the latency objectives (EbbflowErrorBudgetBurn, EbbflowLatencyBudgetBurn).', at, 'percentunit', [
    q('A', `1 - model:ebbflow_router_request_errors:ratio_rate5m{${m}}`, 'no server error, 5m'),
    q('B', `1 - model:ebbflow_router_slow_requests:ratio_rate5m{${m}}`, 'within the latency objective, 5m'),
    q('C', `1 - model:ebbflow_router_slow_requests:ratio_rate1h{${m}}`, 'within the latency objective, 1h'),
  ]),
  (at) => timeseries('Latency vs objective', 'Router latency percentiles against the policy\'s slo_latency_s (0: none).', at, 's', [
    q('A', `model:ebbflow_router_request_duration_seconds:p50_5m{${m}}`, 'p50'),
    q('B', `model:ebbflow_router_request_duration_seconds:p99_5m{${m}}`, 'p99'),
    q('C', `max(ebbflow_policy_slo_latency_seconds{${m}})`, 'objective'),
  ]),
  (at) => timeseries('TTFT and TPOT vs objective', 'Streaming models: time to first token and per output token at the router, against slo_ttft_s.', at, 's', [
    q('A', `histogram_quantile(0.5, sum by (le) (rate(ebbflow_router_ttft_seconds_bucket{${m}}[5m])))`, 'TTFT p50'),
    q('B', `histogram_quantile(0.99, sum by (le) (rate(ebbflow_router_ttft_seconds_bucket{${m}}[5m])))`, 'TTFT p99'),
    q('C', `histogram_quantile(0.99, sum by (le) (rate(ebbflow_router_tpot_seconds_bucket{${m}}[5m])))`, 'TPOT p99'),
    q('D', `max(ebbflow_policy_slo_ttft_seconds{${m}})`, 'TTFT objective'),
  ]),
  (at) => timeseries('Replicas', 'Desired (annotations mark each decision, its direction and what drove it; `ebbflow decisions $model` gives the whole reason), wanted before the GPU budget, and replicas by phase.', at, 'short', [
    q('A', `model:ebbflow_desired_replicas:leader{${m}}`, 'desired'),
    q('B', `max(ebbflow_scheduler_demand_replicas{${m}})`, 'wanted before the budget'),
    q('C', `sum by (phase) (ebbflow_actuator_replicas{${m}})`, '{{phase}}'),
  ]),
  (at) => timeseries('Cold start vs lead', 'Start to ready of the last replica against the lead the scheduler sizes ahead by (EbbflowColdStartSlowerThanLead).', at, 's', [
    q('A', `max(ebbflow_actuator_last_cold_start_seconds{${m}})`, 'last cold start'),
    q('B', `max(ebbflow_scheduler_lead_seconds{${m}})`, 'lead'),
  ]),
  (at) => timeseries('Held requests', 'Requests waiting at the router for a ready replica (scale from zero, all replicas busy starting).', at, 'short', [
    q('A', `sum(ebbflow_router_held{${m}}) or vector(0)`, 'held now'),
    q('B', `sum(rate(ebbflow_router_hold_wait_seconds_count{${m}}[5m])) or vector(0)`, 'held per second'),
    q('C', `sum(rate(ebbflow_router_rejections_total{${m}, reason="hold_timeout"}[5m])) or vector(0)`, 'hold timeouts per second'),
  ]),
  (at) => timeseries('Replica failures', 'Failed starts since the crash-loop back-off reset (EbbflowReplicaCrashLoop at 3) and failures in the last hour.', at, 'short', [
    q('A', `max(ebbflow_actuator_crash_restarts{${m}}) or vector(0)`, 'crash-loop count'),
    q('B', `sum(increase(ebbflow_actuator_replica_failures_total{${m}}[1h])) or vector(0)`, 'failures, 1h'),
  ]),
  (at) => timeseries('Inside Triton', 'Triton\'s own metrics of the model\'s replicas: pending requests, and queue and compute time per request.', at, 's', [
    q('A', `model:triton_queue_seconds_per_request:rate1m{${m}}`, 'queue per request'),
    q('B', `model:triton_compute_seconds_per_request:rate1m{${m}}`, 'compute per request'),
    q('C', `sum(nv_inference_pending_request_count{${m}})`, 'pending'),
  ]),
  (at) => stat('Decisions, last hour', 'Desired-state changes written for the model.', at, 'short', [
    q('A', `sum(increase(ebbflow_scheduler_decisions_total{${m}}[1h])) or vector(0)`),
  ]),
]);

const decisions = annotation(
  'Decisions', `sum by (model, direction, driver) (increase(ebbflow_scheduler_decision_drivers_total{${m}}[20s])) > 0`, 'blue', 'scale {{direction}}',
  'driven by {{driver}}; `ebbflow decisions $model` and `ebbflow explain $model` give the whole reason',
);

export const model: Dashboard = dashboard('ebbflow-model', 'ebbflow / Model', 'One model: demand vs forecast, SLO, replicas and decisions, cold starts, held requests.', panels, [modelVariable], [decisions]);
