// The router: requests by code, the latency it adds, retries, ejections, refusals, front vs Python path.
import type { Dashboard } from '@grafana/schema';
import { dashboard, grid, q, timeseries } from './lib';

const panels = grid(8, 12, [
  (at) => timeseries('Requests by code', 'Answers by gRPC code, all models (front and Python path).', at, 'reqps', [
    q('A', 'sum by (code) (rate(ebbflow_router_requests_total[1m]))', '{{code}}'),
  ]),
  (at) => timeseries('Latency: router vs replica', 'p99 from accept to last byte at the router against p99 of the replica\'s own answer (Python path); the gap approximates what the router adds.', at, 's', [
    q('A', 'histogram_quantile(0.99, sum by (le) (rate(ebbflow_router_request_duration_seconds_bucket[1m])))', 'router p99'),
    q('B', 'histogram_quantile(0.99, sum by (le) (rate(ebbflow_router_upstream_duration_seconds_bucket[1m])))', 'replica p99'),
    q('C', 'histogram_quantile(0.5, sum by (le) (rate(ebbflow_router_request_duration_seconds_bucket[1m])))', 'router p50'),
  ]),
  (at) => timeseries('HAProxy front vs Python path', 'Requests the Python router sent to replicas itself, and those the HAProxy front served (0 with front: grpc).', at, 'reqps', [
    q('A', 'sum(rate(ebbflow_router_upstream_requests_total[1m])) or vector(0)', 'Python path'),
    q('B', 'sum(rate(ebbflow_router_requests_total[1m])) - (sum(rate(ebbflow_router_upstream_requests_total[1m])) or vector(0))', 'HAProxy front'),
  ]),
  (at) => timeseries('Retries and ejections', 'Requests resent to another replica, and replicas taken out of routing after repeated failures.', at, 'short', [
    q('A', 'sum(rate(ebbflow_router_retries_total[5m])) or vector(0)', 'retries per second'),
    q('B', 'sum(increase(ebbflow_router_ejections_total[1h])) or vector(0)', 'ejections, 1h'),
  ]),
  (at) => timeseries('Refusals by reason', 'Requests refused before reaching a replica (EbbflowRouterRejections, EbbflowRouterHoldTimeouts).', at, 'reqps', [
    q('A', 'sum by (reason) (rate(ebbflow_router_rejections_total[5m])) or vector(0)', '{{reason}}'),
  ]),
  (at) => timeseries('In flight and held', 'Requests between accept and end of response, and those waiting for a ready replica.', at, 'short', [
    q('A', 'sum by (model) (ebbflow_router_in_flight)', '{{model}} in flight'),
    q('B', 'sum(ebbflow_router_held) or vector(0)', 'held'),
  ]),
  (at) => timeseries('Calls outstanding per replica', 'What least-outstanding routing balances (Python path).', at, 'short', [
    q('A', 'sum by (model, replica) (ebbflow_router_upstream_in_flight)', '{{model}} {{replica}}'),
  ]),
  (at) => timeseries('Replica answers by code', 'Calls to replicas by gRPC code (Python path).', at, 'reqps', [
    q('A', 'sum by (code) (rate(ebbflow_router_upstream_requests_total[1m]))', '{{code}}'),
  ]),
]);

export const router: Dashboard = dashboard('ebbflow-router', 'ebbflow / Router', 'Requests by code, added latency, retries, ejections, refusals, front vs Python path.', panels, []);
