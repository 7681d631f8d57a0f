// Shared by the example pages: the connection badge in the top bar.

export const $ = (id) => document.getElementById(id);

/** Show a subscription's status and transport in #conn-status / #conn-transport. */
export function showConnection(status, detail = {}) {
  const badge = $('conn-status');
  if (badge) {
    badge.textContent = status === 'closed' && detail.reason === 'ended' ? 'ended' : status;
    badge.dataset.status = status;
    badge.dataset.reason = detail.reason || '';
  }
  const transport = $('conn-transport');
  if (transport && detail.transport) {
    transport.textContent = detail.transport === 'ws' ? 'WebSocket' : 'SSE';
    transport.dataset.transport = detail.transport;
  }
}

/** A short relative age: "0.4 s", "12 s", "3 min". */
export function formatAge(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 10000) return `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
  if (ms < 120000) return `${Math.round(ms / 1000)} s`;
  return `${Math.round(ms / 60000)} min`;
}

/** An element with text and attributes, for building lists without innerHTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? '' : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}
