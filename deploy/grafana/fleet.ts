// Fleet overview: which models run, replicas desired against ready, GPUs against the budget, what they cost.
import type { Dashboard } from '@grafana/schema';
import { dashboard, grid, q, stat, timeseries } from './lib';

const stats = grid(4, 4, [
  (at) => stat('Models', 'Models the leading scheduler decides for.', at, 'short', [q('A', 'count(model:ebbflow_desired_replicas:leader)')]),
  (at) => stat('Ready replicas', 'Replicas serving, all models (actuators).', at, 'short', [q('A', 'sum(model:ebbflow_ready_replicas:sum)')]),
  (at) => stat('GPUs in use', 'GPUs the decided replicas take (one each without a GPU inventory).', at, 'short', [q('A', 'ebbflow:desired_gpus:sum')]),
  (at) => stat('GPU budget', 'Fleet GPU budget shared by priority (0: none). See EbbflowGPUBudgetCapping.', at, 'short', [q('A', 'max(ebbflow_scheduler_gpu_budget)')]),
  (at) => stat('GPU-hours, last 24 h', 'Mean GPUs in use over the last day x 24 h.', at, 'short', [q('A', 'avg_over_time(ebbflow:desired_gpus:sum[24h]) * 24')]),
  (at) => stat('Firing alerts', 'ebbflow alerts firing now; each names its runbook (docs/runbooks).', at, 'short', [q('A', 'count(ALERTS{alertstate="firing", alertname=~"Ebbflow.*"}) or vector(0)')]),
]);

const series = grid(8, 12, [
  (at) => timeseries('Replicas: desired vs ready', 'A gap longer than the lead fires EbbflowReplicasNotReady; `ebbflow explain MODEL` says why a model has what it has.', at, 'short', [
    q('A', 'model:ebbflow_desired_replicas:leader', '{{model}} desired'),
    q('B', 'model:ebbflow_ready_replicas:sum', '{{model}} ready'),
  ]),
  (at) => timeseries('GPUs: in use vs budget', 'GPUs the decisions take against the fleet budget (0: no budget).', at, 'short', [
    q('A', 'ebbflow:desired_gpus:sum', 'in use'),
    q('B', 'max(ebbflow_scheduler_gpu_budget)', 'budget'),
    q('C', 'sum by (model) (ebbflow_scheduler_desired_gpus and on (instance) (ebbflow_scheduler_leader == 1))', '{{model}}'),
  ]),
  (at) => timeseries('Requests per second', 'Requests answered by the router (front and Python path), by model.', at, 'reqps', [
    q('A', 'model:ebbflow_router_requests:rate5m', '{{model}}'),
  ]),
  (at) => timeseries('Server error ratio', "Share of requests failing on the server's side (the availability SLI of EbbflowErrorBudgetBurn; 0.1 % is the objective).", at, 'percentunit', [
    q('A', 'model:ebbflow_router_request_errors:ratio_rate5m', '{{model}}'),
  ]),
  (at) => timeseries('Services up', 'Scrapable instances per service (EbbflowServiceDown below 1).', at, 'short', [
    q('A', 'sum by (service) (up{job="ebbflow"})', '{{service}}'),
  ]),
  (at) => timeseries('Replicas scraped', 'Triton replicas Prometheus scrapes (from the registry in NATS).', at, 'short', [
    q('A', 'sum(up{job="triton"})', 'up'),
  ]),
], 4);

export const fleet: Dashboard = dashboard('ebbflow-fleet', 'ebbflow / Fleet overview', 'Models, replicas desired vs ready, GPUs vs budget and their cost.', [...stats, ...series].map((p, i) => ({ ...p, id: i + 1 })), []);
