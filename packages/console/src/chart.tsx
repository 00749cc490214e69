/**
 * A uPlot time-series chart as a component. The chart is built once per set
 * of series (names and units) and fed new data on every render; its width
 * follows its container. uPlot styles its elements through the CSSOM
 * (`element.style`), which a CSP without `unsafe-inline` allows.
 */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface ChartProps {
  /** Accessible name and heading of the chart. */
  readonly title: string;
  readonly labels: readonly string[];
  /** `[times (s), ...one array per label]`. */
  readonly data: readonly (readonly (number | null)[])[];
  readonly format?: (value: number) => string;
  /** A stable id for tests and the summary's `aria-describedby`. */
  readonly id: string;
}

const palette = ['#2563eb', '#16a34a', '#db2777', '#ea580c', '#7c3aed', '#0891b2', '#ca8a04', '#4b5563'];

export function Chart({ title, labels, data, format, id }: ChartProps) {
  const holder = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const key = labels.join('\u0000');

  useEffect(() => {
    const element = holder.current;
    if (element === null) return undefined;
    const show = format ?? ((value: number) => String(value));
    const options: uPlot.Options = {
      width: Math.max(200, element.clientWidth),
      height: 180,
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max * 1.1)] } },
      axes: [{ stroke: '#6b7280' }, { stroke: '#6b7280', size: 78, values: (_u, values) => values.map((value) => show(value)) }],
      series: [{}, ...labels.map((label, index) => ({ label, stroke: palette[index % palette.length]!, width: 2, value: (_u: uPlot, value: number | null) => (value === null ? '–' : show(value)) }))],
    };
    const chart = new uPlot(options, data as uPlot.AlignedData, element);
    plot.current = chart;
    const observer = new ResizeObserver(() => chart.setSize({ width: Math.max(200, element.clientWidth), height: 180 }));
    observer.observe(element);
    return () => {
      observer.disconnect();
      chart.destroy();
      plot.current = null;
    };
    // Rebuilt only when the series change; data flows in below.
  }, [key]);

  useEffect(() => {
    plot.current?.setData(data as uPlot.AlignedData);
  }, [data]);

  const last = data.slice(1).map((series) => series[series.length - 1] ?? null);
  return (
    <figure class="chart" id={id} data-points={String(data[0]?.length ?? 0)} data-last={last.map((v) => (v === null ? '' : String(v))).join(',')}>
      <figcaption>{title}</figcaption>
      <div class="chart-plot" ref={holder} role="img" aria-label={`${title}: ${labels.map((label, i) => `${label} ${last[i] === null || last[i] === undefined ? 'no data' : (format ?? String)(last[i])}`).join(', ')}`} />
    </figure>
  );
}
