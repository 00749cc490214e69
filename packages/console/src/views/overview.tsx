/**
 * The live overview: charts that move every second from the overview
 * stream (connections by transport, subscriptions, publications and
 * deliveries per second in total; event-loop delay, heap and RSS per node
 * and worker), a table of the latest sample per node, and what the
 * watchdog has flagged.
 */
import { Chart } from '../chart.tsx';
import { bytes, count, ms } from '../format.ts';
import { nodeLabel, samples, streamState, type NodeSample, type Sample } from '../overview-stream.ts';

type Series = (number | null)[];

function totals(list: readonly Sample[], pick: (node: NodeSample) => number): Series {
  return list.map((sample) => sample.nodes.reduce((sum, node) => sum + (pick(node) ?? 0), 0));
}

function perNode(list: readonly Sample[], labels: readonly string[], pick: (node: NodeSample) => number): Series[] {
  return labels.map((label) =>
    list.map((sample) => {
      const node = sample.nodes.find((n) => nodeLabel(n) === label);
      return node === undefined ? null : pick(node);
    }),
  );
}

export function Overview() {
  const list = samples.value;
  const times = list.map((s) => s.t);
  const latest = list[list.length - 1];
  const labels = [...new Set(list.flatMap((s) => s.nodes.map(nodeLabel)))].sort();
  const flagged = latest?.nodes.filter((n) => (n.watchdog ?? []).length > 0) ?? [];

  return (
    <section aria-labelledby="overview-title">
      <div class="title-row">
        <h2 id="overview-title">Overview</h2>
        <span class={`pill ${streamState.value}`} id="stream-state">
          {streamState.value === 'live' ? 'live' : streamState.value}
        </span>
      </div>
      <section class="watchdog" aria-labelledby="watchdog-title">
        <h3 id="watchdog-title">Watchdog</h3>
        {latest === undefined ? (
          <p class="empty">Waiting for the first sample…</p>
        ) : flagged.length === 0 ? (
          <p class="ok" id="watchdog-ok">
            Nothing flagged.
          </p>
        ) : (
          <ul id="watchdog-flags">
            {flagged.map((n) => (
              <li key={nodeLabel(n)} class="flag">
                <strong>{nodeLabel(n)}</strong>: {n.watchdog.join(', ')}
              </li>
            ))}
          </ul>
        )}
      </section>
      <div class="charts">
        <Chart
          id="chart-connections"
          title="Connections by transport"
          labels={['WebSocket', 'SSE', 'Long polling', 'Pusher']}
          data={[
            times,
            totals(list, (n) => n.connections?.websocket),
            totals(list, (n) => n.connections?.sse),
            totals(list, (n) => n.connections?.longPoll),
            totals(list, (n) => n.connections?.pusher),
          ]}
          format={count}
        />
        <Chart id="chart-subscriptions" title="Subscriptions" labels={['subscriptions']} data={[times, totals(list, (n) => n.subscriptions)]} format={count} />
        <Chart
          id="chart-rates"
          title="Publications and deliveries per second"
          labels={['publications/s', 'deliveries/s']}
          data={[times, totals(list, (n) => n.publicationsPerSecond), totals(list, (n) => n.deliveriesPerSecond)]}
          format={count}
        />
        <Chart id="chart-loop" title="Event-loop delay" labels={labels} data={[times, ...perNode(list, labels, (n) => n.eventLoopDelayMs)]} format={ms} />
        <Chart id="chart-heap" title="Heap used" labels={labels} data={[times, ...perNode(list, labels, (n) => n.heapUsedBytes)]} format={bytes} />
        <Chart id="chart-rss" title="Resident memory (RSS)" labels={labels} data={[times, ...perNode(list, labels, (n) => n.rssBytes)]} format={bytes} />
      </div>
      <h3>Nodes and workers</h3>
      <div class="table-wrap">
        <table id="nodes-table">
          <thead>
            <tr>
              <th scope="col">Node</th>
              <th scope="col">WebSocket</th>
              <th scope="col">SSE</th>
              <th scope="col">Long poll</th>
              <th scope="col">Pusher</th>
              <th scope="col">Subscriptions</th>
              <th scope="col">Publications/s</th>
              <th scope="col">Deliveries/s</th>
              <th scope="col">Loop delay</th>
              <th scope="col">Heap</th>
              <th scope="col">RSS</th>
            </tr>
          </thead>
          <tbody>
            {(latest?.nodes ?? []).map((n) => (
              <tr key={nodeLabel(n)} data-node={nodeLabel(n)}>
                <th scope="row" title={n.node}>
                  {nodeLabel(n)}
                </th>
                <td>{count(n.connections?.websocket)}</td>
                <td>{count(n.connections?.sse)}</td>
                <td>{count(n.connections?.longPoll)}</td>
                <td>{count(n.connections?.pusher)}</td>
                <td>{count(n.subscriptions)}</td>
                <td data-metric="publications">{count(n.publicationsPerSecond)}</td>
                <td data-metric="deliveries">{count(n.deliveriesPerSecond)}</td>
                <td>{ms(n.eventLoopDelayMs)}</td>
                <td>{bytes(n.heapUsedBytes)}</td>
                <td>{bytes(n.rssBytes)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
