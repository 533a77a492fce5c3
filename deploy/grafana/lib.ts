// Typed builders shared by the dashboards: every panel, target and variable is checked against Grafana's own
// schema types (@grafana/schema), so a misspelt option, a wrong enum value or an unknown field fails `tsc`.
import {
  BigValueColorMode,
  BigValueGraphMode,
  BigValueJustifyMode,
  BigValueTextMode,
  GraphDrawStyle,
  LegendDisplayMode,
  PercentChangeColorMode,
  SortOrder,
  TooltipDisplayMode,
  VariableRefresh,
  VariableSort,
  VizOrientation,
} from '@grafana/schema';
import type { AnnotationQuery, AnnotationTarget, Dashboard, DataSourceRef, FieldConfigSource, GridPos, Panel, VariableModel } from '@grafana/schema';
import type { FieldConfig as TimeSeriesFieldConfig, Options as TimeSeriesOptions } from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type { Options as StatOptions } from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';

/** The Prometheus data source, chosen on import (`${datasource}`): the one `ebbflow up --prometheus` runs or yours. */
export const prometheus: DataSourceRef = { type: 'prometheus', uid: '${datasource}' };

/** One PromQL query of a panel. `expr` is what the end-to-end test evaluates against a real Prometheus. */
export type PromTarget = {
  refId: string;
  expr: string;
  legendFormat?: string;
  datasource: DataSourceRef;
};

export type Unit = 'short' | 'reqps' | 's' | 'percentunit' | 'none' | 'bool';

export function q(refId: string, expr: string, legendFormat?: string): PromTarget {
  return legendFormat === undefined ? { refId, expr, datasource: prometheus } : { refId, expr, legendFormat, datasource: prometheus };
}

function fieldConfig(unit: Unit, custom?: TimeSeriesFieldConfig): FieldConfigSource {
  return { defaults: custom === undefined ? { unit } : { unit, custom: { ...custom } }, overrides: [] };
}

const timeSeriesOptions: TimeSeriesOptions = {
  legend: { displayMode: LegendDisplayMode.List, placement: 'bottom', showLegend: true, calcs: [] },
  tooltip: { mode: TooltipDisplayMode.Multi, sort: SortOrder.None },
  orientation: VizOrientation.Auto,
};

const statOptions: StatOptions = {
  colorMode: BigValueColorMode.Value,
  graphMode: BigValueGraphMode.Area,
  justifyMode: BigValueJustifyMode.Auto,
  textMode: BigValueTextMode.Auto,
  percentChangeColorMode: PercentChangeColorMode.Standard,
  showPercentChange: false,
  wideLayout: true,
  orientation: VizOrientation.Auto,
  reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
};

const lines: TimeSeriesFieldConfig = { drawStyle: GraphDrawStyle.Line, lineWidth: 1, fillOpacity: 10 };

/** A time series panel; `description` says what to do when it looks wrong. */
export function timeseries(title: string, description: string, gridPos: GridPos, unit: Unit, targets: PromTarget[]): Panel {
  return { type: 'timeseries', title, description, gridPos, datasource: prometheus, fieldConfig: fieldConfig(unit, lines), options: { ...timeSeriesOptions }, targets };
}

export function stat(title: string, description: string, gridPos: GridPos, unit: Unit, targets: PromTarget[]): Panel {
  return { type: 'stat', title, description, gridPos, datasource: prometheus, fieldConfig: fieldConfig(unit), options: { ...statOptions }, targets };
}

/** Panels laid out left to right, `width` of 24 columns each, `height` rows high, wrapping as Grafana does. */
export function grid(height: number, width: number, panels: Array<(gridPos: GridPos) => Panel>, top = 0): Panel[] {
  const perRow = Math.floor(24 / width);
  return panels.map((make, i) => ({ ...make({ x: (i % perRow) * width, y: top + Math.floor(i / perRow) * height, w: width, h: height }), id: i + 1 }));
}

export const datasourceVariable: VariableModel = {
  name: 'datasource',
  label: 'Prometheus',
  type: 'datasource',
  query: 'prometheus',
};

/** The `model` template variable: every model the scheduler has decided for. */
export const modelVariable: VariableModel = {
  name: 'model',
  label: 'Model',
  type: 'query',
  datasource: prometheus,
  query: { query: 'label_values(ebbflow_scheduler_desired_replicas, model)', refId: 'model' },
  refresh: VariableRefresh.onTimeRangeChanged,
  sort: VariableSort.alphabeticalAsc,
  includeAll: false,
  multi: false,
};

/** The schema leaves an annotation's target open (each data source adds its own fields); Prometheus's are these. */
export type PromAnnotationTarget = AnnotationTarget & { refId: string; expr: string; titleFormat: string; textFormat: string; step: string };

export function annotation(name: string, expr: string, iconColor: string, titleFormat: string, textFormat: string): AnnotationQuery {
  const target: PromAnnotationTarget = { limit: 100, matchAny: false, tags: [], type: 'dashboard', refId: 'Anno', expr, titleFormat, textFormat, step: '10s' };
  return { name, datasource: prometheus, enable: true, iconColor, target };
}

export function dashboard(uid: string, title: string, description: string, panels: Panel[], variables: VariableModel[], annotations: AnnotationQuery[] = []): Dashboard {
  return {
    uid,
    title,
    description,
    tags: ['ebbflow'],
    editable: true,
    schemaVersion: 39,
    time: { from: 'now-1h', to: 'now' },
    refresh: '10s',
    templating: { list: [datasourceVariable, ...variables] },
    annotations: { list: annotations },
    panels,
  };
}
