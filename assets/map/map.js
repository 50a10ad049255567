// exemplar: the interactive map of `embed plot --out map.html`.
//
// Hand-written on one 2D canvas, no library. The page must open offline from a single file, so
// any library would be vendored into every map: Plotly (~3.5 MB minified) would outweigh the
// data of a 13,000-point map, and the WebGL scatter libraries (deck.gl, regl-scatterplot) still
// need their own hover, legend and search code around them. What the map needs (pan and zoom,
// a 3D orbit, hover, pin, legend toggles, search) fits in this file. Speed comes from drawing
// the points straight into an ImageData buffer (a precomputed disc stamp per point, blended
// by hand) instead of one canvas call per point: 100,000 points paint in a few milliseconds,
// so every drag frame repaints everything. Text from the data only ever reaches the page
// through textContent, never innerHTML.
//
// Data (see src/plot/html.rs): points in paint order; coordinates u16 per axis, base64;
// categories and field values as small ints into tables.
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const data = JSON.parse($('exemplar-data').textContent);
  const n = data.n;
  const dims = data.dims;
  const canvas = $('map');
  const ctx = canvas.getContext('2d');
  const tip = $('tooltip');
  const ids = data.ids;
  const texts = data.texts.length === n ? data.texts : null;

  // ---- decoding ----------------------------------------------------------------------------

  function bytes(b64) {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  // Little-endian ints of enc.width bytes (1, 2 or 4), decoded by hand: no endianness assumption.
  function ints(enc, count) {
    const b = bytes(enc.data);
    const w = enc.width;
    const out = new Uint32Array(count);
    for (let i = 0, k = 0; i < count; i++, k += w) {
      let v = 0;
      for (let j = w - 1; j >= 0; j--) v = v * 256 + b[k + j];
      out[i] = v;
    }
    return out;
  }

  const category = ints(data.category, n);
  const fields = data.fields.map((f) => ({ name: f.name, values: f.values, index: ints(f.index, n) }));
  const legend = data.legend.map((e) => {
    const c = parseInt(e.color.slice(1), 16);
    return { label: e.label, count: e.count, color: e.color, rgb: [c >> 16, (c >> 8) & 255, c & 255] };
  });

  // Coordinates in [0, 1] per axis (2D), or centred in the cube [-1, 1]^3 with one scale for
  // all axes (3D, as the static maps: distances stay comparable).
  const pos = [];
  {
    const q = ints({ width: 2, data: data.coords }, n * dims);
    for (let t = 0; t < dims; t++) {
      const a = new Float32Array(n);
      for (let i = 0; i < n; i++) a[i] = q[t * n + i] / 65535;
      pos.push(a);
    }
  }
  const span = data.lo.map((lo, t) => data.hi[t] - lo);
  const unit = (v, t) => (v - data.lo[t]) / span[t];
  let half = 0;
  for (let t = 0; t < dims; t++) half = Math.max(half, span[t] / 2);
  // 3D: a point of [0,1] on axis t -> the cube coordinate.
  const cube = (u, t) => ((u - 0.5) * span[t]) / half;
  if (dims === 3) {
    for (let t = 0; t < 3; t++) {
      const a = pos[t];
      for (let i = 0; i < n; i++) a[i] = cube(a[i], t);
    }
  }
  const mark = data.highlight;
  const anchor = mark ? mark.anchor.map((v, t) => (dims === 3 ? cube(unit(v, t), t) : unit(v, t))) : null;

  // ---- state -------------------------------------------------------------------------------

  const baseRadius = n <= 1000 ? 4 : n <= 5000 ? 3 : 2; // CSS px, as the PNG maps
  const hidden = new Uint8Array(legend.length);
  let match = null; // Uint8Array of search matches, or null when no search
  let matchCount = 0;
  let matchList = [];
  let matchCursor = -1;
  let hover = -1;
  let pinned = -1;
  const sx = new Float32Array(n); // last frame's screen position (CSS px in the canvas)
  const sy = new Float32Array(n);
  const shown = new Uint8Array(n); // 1 where the last frame drew the point
  let drawnPoints = 0;
  let renders = 0;
  // 2D view: screen = base * zoom + (tx, ty), base = the unzoomed position.
  let zoom = 1;
  let tx = 0;
  let ty = 0;
  // 3D view.
  let az = data.view[0];
  let el = data.view[1];
  let zoom3 = 1;
  let W = 0; // canvas size in CSS px
  let H = 0;
  let dpr = 1;
  let image = null;
  const margin = dims === 2 ? { left: 64, right: 14, top: 12, bottom: 46 } : { left: 8, right: 8, top: 30, bottom: 8 };

  // ---- geometry ----------------------------------------------------------------------------

  function plotRect() {
    return { x: margin.left, y: margin.top, w: Math.max(10, W - margin.left - margin.right), h: Math.max(10, H - margin.top - margin.bottom) };
  }

  // 2D: the unzoomed position of u, v in [0,1] (4% padding as the PNG maps), then the view.
  function screen2(u, v) {
    const r = plotRect();
    const bx = r.x + r.w * (0.04 + 0.92 * u);
    const by = r.y + r.h * (0.96 - 0.92 * v);
    return [bx * zoom + tx, by * zoom + ty];
  }

  // 3D orthographic view, the same rotation as the PNG maps: (screen x, screen y, depth).
  function rotation() {
    const a = (az * Math.PI) / 180;
    const e = (el * Math.PI) / 180;
    return { sa: Math.sin(a), ca: Math.cos(a), se: Math.sin(e), ce: Math.cos(e) };
  }
  function scale3() {
    const r = plotRect();
    // The cube's projection spans at most sqrt(3) = 1.73 units from its centre at any angle.
    return { cx: r.x + r.w / 2, cy: r.y + r.h / 2, s: (Math.min(r.w, r.h) / 2 / 1.8) * zoom3 };
  }
  function screen3(p, rot, sc) {
    const xr = p[0] * rot.ca - p[1] * rot.sa;
    const yr = p[0] * rot.sa + p[1] * rot.ca;
    return [sc.cx + xr * sc.s, sc.cy - (yr * rot.se + p[2] * rot.ce) * sc.s, yr * rot.ce - p[2] * rot.se];
  }

  function radius() {
    // Points grow a little when zoomed in (up to 3x), so dense regions open up.
    const z = dims === 2 ? zoom : zoom3;
    return Math.min(baseRadius * 3, Math.round(baseRadius * Math.max(1, Math.sqrt(z))));
  }

  // ---- painting into the pixel buffer -----------------------------------------------------

  let stamp = null; // pixel offsets of a disc, for the current radius and canvas width
  let stampKey = '';
  function discStamp(R, stride) {
    const key = R + ':' + stride;
    if (key !== stampKey) {
      const dx = [];
      const dy = [];
      for (let y = -R; y <= R; y++) for (let x = -R; x <= R; x++) if (x * x + y * y <= R * R + R) { dx.push(x); dy.push(y); }
      stamp = { dx: Int16Array.from(dx), dy: Int16Array.from(dy), R };
      stampKey = key;
    }
    return stamp;
  }

  // Blend a disc of colour rgb at alpha a, centred at device pixel (X, Y), clipped to clip.
  // Integer blending: out = (dst * (256 - w) + colour * w) >> 8 with w = round(256 a).
  function disc(px, stride, X, Y, rgb, w, st, clip) {
    const keep = 256 - w;
    const r = rgb[0] * w, g = rgb[1] * w, b = rgb[2] * w;
    const inside = X - st.R >= clip.x0 && X + st.R < clip.x1 && Y - st.R >= clip.y0 && Y + st.R < clip.y1;
    const dx = st.dx;
    const dy = st.dy;
    for (let j = 0; j < dx.length; j++) {
      const x = X + dx[j];
      const y = Y + dy[j];
      if (!inside && (x < clip.x0 || x >= clip.x1 || y < clip.y0 || y >= clip.y1)) continue;
      const k = (y * stride + x) << 2;
      px[k] = (px[k] * keep + r) >> 8;
      px[k + 1] = (px[k + 1] * keep + g) >> 8;
      px[k + 2] = (px[k + 2] * keep + b) >> 8;
    }
  }

  function line(px, stride, x0, y0, x1, y1, grey, clip) {
    const steps = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1);
    for (let s = 0; s <= steps; s++) {
      const x = Math.round(x0 + ((x1 - x0) * s) / steps);
      const y = Math.round(y0 + ((y1 - y0) * s) / steps);
      if (x < clip.x0 || x >= clip.x1 || y < clip.y0 || y >= clip.y1) continue;
      const k = (y * stride + x) * 4;
      px[k] = Math.min(px[k], grey);
      px[k + 1] = Math.min(px[k + 1], grey);
      px[k + 2] = Math.min(px[k + 2], grey);
    }
  }

  function visible(i) {
    return !hidden[category[i]];
  }

  // Paint the grid (2D) or cube (3D) and the points into `image`.
  function paint() {
    const stride = image.width;
    const px = image.data;
    new Uint32Array(px.buffer).fill(0xffffffff);
    const r = plotRect();
    const clip = { x0: Math.round(r.x * dpr), y0: Math.round(r.y * dpr), x1: Math.round((r.x + r.w) * dpr), y1: Math.round((r.y + r.h) * dpr) };
    if (dims === 3) { clip.x0 = 0; clip.y0 = 0; clip.x1 = image.width; clip.y1 = image.height; }
    const st = discStamp(Math.max(1, Math.round(radius() * dpr)), stride);
    let order = null;
    if (dims === 2) {
      grid(px, stride, clip);
      // screen2, unrolled: one multiply-add per axis and point.
      const ax = (r.x + r.w * 0.04) * zoom + tx;
      const kx = r.w * 0.92 * zoom;
      const ay = (r.y + r.h * 0.96) * zoom + ty;
      const ky = -r.h * 0.92 * zoom;
      const u = pos[0];
      const v = pos[1];
      for (let i = 0; i < n; i++) {
        sx[i] = ax + kx * u[i];
        sy[i] = ay + ky * v[i];
      }
    } else {
      cubeEdges(px, stride, clip);
      order = depthOrder();
    }
    let count = 0;
    const reach = radius();
    shown.fill(0);
    // With a search: the non-matches faint first, then the matches on top.
    for (const pass of match ? [0, 1] : [-1]) {
      const weight = Math.round(256 * (pass === 0 ? 0.12 : 0.72));
      for (let k = 0; k < n; k++) {
        const i = order ? order[k] : k;
        if (!visible(i) || (pass !== -1 && match[i] !== pass)) continue;
        const x = sx[i];
        const y = sy[i];
        if (x < r.x - reach || x > r.x + r.w + reach || y < r.y - reach || y > r.y + r.h + reach) continue;
        disc(px, stride, Math.round(x * dpr), Math.round(y * dpr), legend[category[i]].rgb, weight, st, clip);
        shown[i] = 1;
        count++;
      }
    }
    drawnPoints = count;
  }

  // 3D: screen positions of every point, and the paint order far to near (a counting sort on
  // quantised depth: linear time, stable, so ties keep the shuffled order).
  let depthBuf = null;
  let orderBuf = null;
  function depthOrder() {
    const rot = rotation();
    const sc = scale3();
    if (!depthBuf) { depthBuf = new Uint16Array(n); orderBuf = new Uint32Array(n); }
    const B = 4096;
    const counts = new Uint32Array(B + 1);
    const X = pos[0];
    const Y = pos[1];
    const Z = pos[2];
    for (let i = 0; i < n; i++) {
      // screen3, unrolled.
      const xr = X[i] * rot.ca - Y[i] * rot.sa;
      const yr = X[i] * rot.sa + Y[i] * rot.ca;
      sx[i] = sc.cx + xr * sc.s;
      sy[i] = sc.cy - (yr * rot.se + Z[i] * rot.ce) * sc.s;
      const depth = yr * rot.ce - Z[i] * rot.se;
      // Far (large depth) first: bucket 0 is the farthest.
      const b = Math.max(0, Math.min(B - 1, Math.floor(((1.8 - depth) / 3.6) * B)));
      depthBuf[i] = b;
      counts[b + 1]++;
    }
    for (let b = 0; b < B; b++) counts[b + 1] += counts[b];
    for (let i = 0; i < n; i++) orderBuf[counts[depthBuf[i]]++] = i;
    return orderBuf;
  }

  // 2D: tick positions in data units for the visible part of axis t.
  function ticks(t) {
    const r = plotRect();
    // Screen -> u on this axis, inverting screen2.
    const toU = t === 0 ? (X) => ((X - tx) / zoom - r.x) / r.w / 0.92 - 0.04 / 0.92 : (Y) => (0.96 - ((Y - ty) / zoom - r.y) / r.h) / 0.92;
    const ends = t === 0 ? [toU(r.x), toU(r.x + r.w)] : [toU(r.y + r.h), toU(r.y)];
    const v0 = data.lo[t] + ends[0] * span[t];
    const v1 = data.lo[t] + ends[1] * span[t];
    const raw = (v1 - v0) / 7;
    if (!(raw > 0) || !isFinite(raw)) return [];
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    const out = [];
    for (let v = Math.ceil(v0 / step) * step; v <= v1 + 1e-12; v += step) {
      const u = unit(v, t);
      const s = t === 0 ? screen2(u, 0)[0] : screen2(0, u)[1];
      let label = v.toFixed(decimals);
      if (/^-0(\.0*)?$/.test(label)) label = label.slice(1);
      out.push({ at: s, label });
    }
    return out;
  }

  function grid(px, stride, clip) {
    for (const tk of ticks(0)) {
      const X = Math.round(tk.at * dpr);
      line(px, stride, X, clip.y0, X, clip.y1 - 1, 232, clip);
    }
    for (const tk of ticks(1)) {
      const Y = Math.round(tk.at * dpr);
      line(px, stride, clip.x0, Y, clip.x1 - 1, Y, 232, clip);
    }
  }

  const corners = [];
  for (let b = 0; b < 8; b++) corners.push([b & 1 ? 1 : -1, b & 2 ? 1 : -1, b & 4 ? 1 : -1]);

  function cubeEdges(px, stride, clip) {
    const rot = rotation();
    const sc = scale3();
    for (let a = 0; a < 8; a++) {
      for (const bit of [1, 2, 4]) {
        const b = a | bit;
        if (b === a) continue;
        const p = screen3(corners[a], rot, sc);
        const q = screen3(corners[b], rot, sc);
        line(px, stride, Math.round(p[0] * dpr), Math.round(p[1] * dpr), Math.round(q[0] * dpr), Math.round(q[1] * dpr), 210, clip);
      }
    }
  }

  // ---- overlay (canvas calls on top of the buffer) ------------------------------------------

  function font(size, weight) {
    return (weight || '') + ' ' + size + 'px "DejaVu Sans", system-ui, sans-serif';
  }

  function overlay() {
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#333';
    if (dims === 2) axes2(); else axes3();
    if (mark) drawMark();
    if (match && matchCount <= 5000) {
      ctx.strokeStyle = 'rgba(0,0,0,0.85)';
      ctx.lineWidth = 1.5;
      for (const i of matchList) if (shown[i]) ring(i, radius() + 2);
    }
    if (hover >= 0 && shown[hover]) { ctx.strokeStyle = '#000'; ctx.lineWidth = 2; ring(hover, radius() + 4); }
    if (pinned >= 0 && shown[pinned]) { ctx.strokeStyle = '#d62728'; ctx.lineWidth = 2.5; ring(pinned, radius() + 5); }
  }

  function ring(i, r) {
    ctx.beginPath();
    ctx.arc(sx[i], sy[i], r, 0, 2 * Math.PI);
    ctx.stroke();
  }

  function axes2() {
    const r = plotRect();
    ctx.strokeStyle = '#999';
    ctx.lineWidth = 1;
    ctx.strokeRect(r.x + 0.5, r.y + 0.5, r.w - 1, r.h - 1);
    ctx.font = font(12);
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const tk of ticks(0)) if (tk.at >= r.x && tk.at <= r.x + r.w) ctx.fillText(tk.label, tk.at, r.y + r.h + 4);
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const tk of ticks(1)) if (tk.at >= r.y && tk.at <= r.y + r.h) ctx.fillText(tk.label, r.x - 5, tk.at);
    ctx.font = font(13);
    ctx.textAlign = 'center';
    ctx.textBaseline = 'bottom';
    ctx.fillText(data.axes[0], r.x + r.w / 2, H - 4);
    ctx.save();
    ctx.translate(14, r.y + r.h / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = 'middle';
    ctx.fillText(data.axes[1], 0, 0);
    ctx.restore();
  }

  // 3D: x and y along the front bottom edges, z up the leftmost bottom corner, labels pushed
  // away from the centre (as the PNG maps).
  function axes3() {
    const rot = rotation();
    const sc = scale3();
    const at = (c) => screen3(c, rot, sc);
    const bottom = corners.filter((c) => c[2] < 0);
    const front = bottom.reduce((a, b) => (at(b)[2] < at(a)[2] ? b : a));
    const left = bottom.reduce((a, b) => (at(b)[0] < at(a)[0] ? b : a));
    const centre = at([0, 0, 0]);
    ctx.font = font(13);
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    for (let t = 0; t < 3; t++) {
      const from = t === 2 ? left : front;
      const to = from.slice();
      to[t] = -from[t];
      const a = at(from);
      const b = at(to);
      ctx.strokeStyle = '#5a5a5a';
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(a[0], a[1]);
      ctx.lineTo(b[0], b[1]);
      ctx.stroke();
      const mx = (a[0] + b[0]) / 2;
      const my = (a[1] + b[1]) / 2;
      const dx = mx - centre[0];
      const dy = my - centre[1];
      const len = Math.max(1, Math.hypot(dx, dy));
      ctx.fillText(data.axes[t], mx + (dx / len) * 24, my + (dy / len) * 18);
    }
    ctx.textAlign = 'left';
    ctx.textBaseline = 'top';
    ctx.fillText('azimuth ' + Math.round(az) + '°, elevation ' + Math.round(el) + '°', 10, 8);
  }

  function markPoint() {
    if (dims === 2) return screen2(anchor[0], anchor[1]);
    return screen3(anchor, rotation(), scale3());
  }

  // The query (or first id): lines to its neighbours, ringed and numbered, a cross on top.
  function drawMark() {
    const a = markPoint();
    const r = radius();
    ctx.strokeStyle = 'rgba(0,0,0,0.8)';
    ctx.lineWidth = 2;
    for (const i of mark.neighbours) {
      ctx.beginPath();
      ctx.moveTo(a[0], a[1]);
      ctx.lineTo(sx[i], sy[i]);
      ctx.stroke();
    }
    ctx.font = font(13, '600');
    ctx.textAlign = 'left';
    ctx.textBaseline = 'bottom';
    mark.neighbours.forEach((i, rank) => {
      ctx.strokeStyle = '#000';
      ctx.lineWidth = 2;
      ring(i, r + 5);
      ctx.strokeStyle = '#fff';
      ctx.lineWidth = 1;
      ring(i, r + 3);
      ctx.fillStyle = '#000';
      ctx.fillText(String(rank + 1), sx[i] + r + 4, sy[i] - r - 2);
    });
    ctx.beginPath();
    ctx.arc(a[0], a[1], r + 6, 0, 2 * Math.PI);
    ctx.fillStyle = '#fff';
    ctx.fill();
    ctx.strokeStyle = '#000';
    ctx.lineWidth = 2;
    ctx.stroke();
    const c = r + 4;
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.moveTo(a[0] - c, a[1] - c);
    ctx.lineTo(a[0] + c, a[1] + c);
    ctx.moveTo(a[0] + c, a[1] - c);
    ctx.lineTo(a[0] - c, a[1] + c);
    ctx.stroke();
  }

  // ---- frames ------------------------------------------------------------------------------

  // full: repaint the points; otherwise only the overlay changed (hover, pin).
  function render(full) {
    if (!image || full) paint();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.putImageData(image, 0, 0);
    overlay();
    renders++;
  }

  let pending = 0; // 0: nothing, 1: overlay, 2: full
  function schedule(full) {
    const want = full ? 2 : 1;
    if (pending >= want) return;
    const first = pending === 0;
    pending = want;
    if (first) requestAnimationFrame(() => { const f = pending === 2; pending = 0; render(f); });
  }

  function resize() {
    const box = canvas.parentElement.getBoundingClientRect();
    dpr = window.devicePixelRatio || 1;
    W = Math.max(50, Math.floor(box.width));
    H = Math.max(50, Math.floor(box.height));
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    image = ctx.createImageData(canvas.width, canvas.height);
    render(true);
  }

  // ---- picking and the tooltip -------------------------------------------------------------

  // The drawn point under (x, y) (CSS px in the canvas): the nearest within reach, the one
  // painted last among equals (it is the one seen on top).
  function pick(x, y) {
    const reach = radius() + 4;
    let best = -1;
    let bestD = reach * reach;
    for (let i = 0; i < n; i++) {
      if (!shown[i]) continue;
      const dx = sx[i] - x;
      const dy = sy[i] - y;
      const d = dx * dx + dy * dy;
      if (d < bestD || (d === bestD && best >= 0 && later(i, best))) { bestD = d; best = i; }
    }
    return best;
  }

  function later(i, j) {
    if (match && match[i] !== match[j]) return match[i] > match[j];
    if (dims === 3) return depthBuf[i] !== depthBuf[j] ? depthBuf[i] > depthBuf[j] : i > j;
    return i > j;
  }

  function el_(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fillTip(i, isPinned) {
    tip.replaceChildren();
    tip.appendChild(el_('div', 'tip-id', ids[i]));
    for (const f of fields) {
      const v = f.values[f.index[i]];
      tip.appendChild(el_('div', 'tip-field', f.name + ': ' + (v === null ? '(none)' : v)));
    }
    if (texts) tip.appendChild(el_('div', 'tip-text', texts[i]));
    tip.classList.toggle('pinned', isPinned);
    if (isPinned) {
      const row = el_('div', 'tip-buttons');
      const copy = el_('button', 'copy', 'copy id');
      copy.type = 'button';
      copy.addEventListener('click', () => copyText(ids[i], copy));
      const close = el_('button', 'close', 'close');
      close.type = 'button';
      close.addEventListener('click', () => unpin());
      row.append(copy, close);
      tip.appendChild(row);
    }
    tip.hidden = false;
    placeTip(sx[i], sy[i]);
  }

  function placeTip(x, y) {
    const w = tip.offsetWidth;
    const h = tip.offsetHeight;
    let left = x + 14;
    let top = y + 14;
    if (left + w > W - 4) left = Math.max(4, x - 14 - w);
    if (top + h > H - 4) top = Math.max(4, y - 14 - h);
    tip.style.left = left + 'px';
    tip.style.top = top + 'px';
  }

  function copyText(s, button) {
    const done = (ok) => {
      button.textContent = ok ? 'copied' : 'copy failed';
      setTimeout(() => { button.textContent = 'copy id'; }, 1200);
    };
    const fallback = () => {
      const ta = document.createElement('textarea');
      ta.value = s;
      document.body.appendChild(ta);
      ta.select();
      let ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      ta.remove();
      done(ok);
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(s).then(() => done(true), fallback);
    else fallback();
  }

  function setHover(i) {
    if (i === hover) return;
    hover = i;
    if (pinned < 0) {
      if (i >= 0) fillTip(i, false); else tip.hidden = true;
    }
    schedule(false);
  }

  function pin(i) {
    pinned = i;
    fillTip(i, true);
    schedule(false);
  }

  function unpin() {
    pinned = -1;
    tip.hidden = true;
    if (hover >= 0) fillTip(hover, false);
    schedule(false);
  }

  // ---- input -------------------------------------------------------------------------------

  let drag = null;
  function local(ev) {
    const r = canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  canvas.addEventListener('mousedown', (ev) => {
    if (ev.button !== 0) return;
    const [x, y] = local(ev);
    drag = { x, y, tx, ty, az, el, moved: false };
    ev.preventDefault();
  });
  window.addEventListener('mousemove', (ev) => {
    const [x, y] = local(ev);
    if (drag) {
      const dx = x - drag.x;
      const dy = y - drag.y;
      if (!drag.moved && dx * dx + dy * dy < 16) return;
      drag.moved = true;
      canvas.classList.add('dragging');
      if (dims === 2) { tx = drag.tx + dx; ty = drag.ty + dy; } else {
        az = drag.az - dx * 0.4;
        el = Math.max(-89, Math.min(89, drag.el + dy * 0.4));
      }
      if (pinned < 0) tip.hidden = true;
      hover = -1;
      schedule(true);
      return;
    }
    if (ev.target !== canvas) return;
    setHover(pick(x, y));
  });
  window.addEventListener('mouseup', () => {
    if (!drag) return;
    const wasClick = !drag.moved;
    drag = null;
    canvas.classList.remove('dragging');
    if (wasClick) {
      if (hover >= 0) pin(hover); else if (pinned >= 0) unpin();
    } else if (pinned >= 0) {
      fillTip(pinned, true);
    }
  });
  canvas.addEventListener('mouseleave', () => { if (!drag) setHover(-1); });
  canvas.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    const f = Math.exp(-ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0015));
    if (dims === 2) {
      const z = Math.max(0.2, Math.min(5000, zoom * f));
      const k = z / zoom;
      const [x, y] = local(ev);
      tx = x - (x - tx) * k;
      ty = y - (y - ty) * k;
      zoom = z;
    } else {
      zoom3 = Math.max(0.2, Math.min(200, zoom3 * f));
    }
    hover = -1;
    if (pinned < 0) tip.hidden = true;
    schedule(true);
    if (pinned >= 0) requestAnimationFrame(() => fillTip(pinned, true));
  }, { passive: false });
  function resetView() {
    zoom = 1; tx = 0; ty = 0; zoom3 = 1; az = data.view[0]; el = data.view[1];
    render(true);
    if (pinned >= 0) fillTip(pinned, true);
  }
  canvas.addEventListener('dblclick', resetView);
  $('reset').addEventListener('click', resetView);
  window.addEventListener('resize', resize);

  // ---- legend ------------------------------------------------------------------------------

  function buildLegend() {
    $('legend-title').textContent = data.legend_title;
    const list = $('legend');
    legend.forEach((e, k) => {
      const b = el_('button');
      b.type = 'button';
      b.title = 'show or hide ' + e.label;
      b.setAttribute('aria-pressed', 'true');
      b.dataset.category = String(k);
      const sw = el_('span', 'swatch');
      sw.style.background = e.color;
      b.append(sw, el_('span', 'label', e.label), el_('span', 'count', e.count.toLocaleString('en-US')));
      b.addEventListener('click', () => {
        hidden[k] = hidden[k] ? 0 : 1;
        b.classList.toggle('off', !!hidden[k]);
        b.setAttribute('aria-pressed', hidden[k] ? 'false' : 'true');
        if (hover >= 0 && hidden[category[hover]]) setHover(-1);
        if (pinned >= 0 && hidden[category[pinned]]) unpin();
        render(true);
      });
      const li = el_('li');
      li.appendChild(b);
      list.appendChild(li);
    });
    if (mark) {
      const marks = $('marks');
      const line1 = el_('li');
      line1.append(el_('span', 'mark-symbol', '✕'), el_('span', '', mark.label));
      const line2 = el_('li');
      line2.append(el_('span', 'mark-symbol', '◯'), el_('span', '', 'its ' + mark.neighbours.length + ' neighbours (1 = nearest)'));
      marks.append(line1, line2);
    }
  }

  // ---- search ------------------------------------------------------------------------------

  let lowerTexts = null;
  let lowerIds = null;
  function search(q) {
    q = q.trim().toLowerCase();
    matchCursor = -1;
    if (!q) {
      match = null; matchCount = 0; matchList = [];
      $('matches').textContent = '';
    } else {
      if (!lowerIds) {
        lowerIds = ids.map((s) => s.toLowerCase());
        lowerTexts = texts ? texts.map((s) => s.toLowerCase()) : null;
      }
      match = new Uint8Array(n);
      matchList = [];
      for (let i = 0; i < n; i++) {
        if (lowerIds[i].includes(q) || (lowerTexts && lowerTexts[i].includes(q))) { match[i] = 1; matchList.push(i); }
      }
      matchCount = matchList.length;
      $('matches').textContent = matchCount.toLocaleString('en-US') + (matchCount === 1 ? ' match' : ' matches');
    }
    render(true);
    return matchCount;
  }

  // Enter: pin the next match (visible categories only); in 2D bring it into view.
  function nextMatch() {
    const list = matchList.filter(visible);
    if (!list.length) return;
    matchCursor = (matchCursor + 1) % list.length;
    const i = list[matchCursor];
    if (dims === 2) {
      const r = plotRect();
      if (!(sx[i] >= r.x && sx[i] <= r.x + r.w && sy[i] >= r.y && sy[i] <= r.y + r.h)) {
        tx += r.x + r.w / 2 - sx[i];
        ty += r.y + r.h / 2 - sy[i];
      }
    }
    render(true);
    pin(i);
  }

  let searchTimer = 0;
  $('search').addEventListener('input', (ev) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => search(ev.target.value), n > 20000 ? 200 : 60);
  });
  $('search').addEventListener('keydown', (ev) => {
    if (ev.key !== 'Enter') return;
    clearTimeout(searchTimer);
    search(ev.target.value);
    nextMatch();
  });

  // ---- start -------------------------------------------------------------------------------

  $('title').textContent = data.title;
  $('help').textContent = (dims === 2 ? 'drag to pan, wheel to zoom' : 'drag to rotate, wheel to zoom') +
    ', double-click to reset; hover a point for its text, click to pin it; click a legend entry to hide or show it';
  buildLegend();
  resize();

  let idIndex = null;
  // The page's state for tests and for the console.
  window.exemplarMap = {
    ready: true,
    readyMs: performance.now(),
    points: n,
    dims,
    get drawnPoints() { return drawnPoints; },
    get renders() { return renders; },
    get matches() { return matchCount; },
    get hovered() { return hover; },
    get pinned() { return pinned; },
    indexOf(id) {
      if (!idIndex) { idIndex = new Map(); ids.forEach((s, i) => idIndex.set(s, i)); }
      const i = idIndex.get(id);
      return i === undefined ? -1 : i;
    },
    // Viewport (client) coordinates of point i in the last frame, and whether it was drawn.
    screenOf(i) {
      const r = canvas.getBoundingClientRect();
      return { x: r.left + sx[i], y: r.top + sy[i], drawn: !!shown[i] };
    },
    idOf(i) { return ids[i]; },
    categoryOf(i) { return category[i]; },
    get highlighted() { return mark ? mark.neighbours.map((i) => ids[i]) : []; },
    tooltipText() { return tip.hidden ? '' : tip.textContent; },
    search,
    render: () => render(true),
  };
})();
