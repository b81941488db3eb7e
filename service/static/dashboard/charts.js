// uPlot charts of one metric each: a row is {t (ms), value, min, max, count, device}.

// Okabe-Ito colours: told apart with the common colour-vision deficiencies
const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
const BAND = "rgba(0, 114, 178, 0.14)";
const BAR = { steps: "#007a5a", calories: "#b34700" };

export function deviceColours(devices) {
  const colours = new Map();
  [...new Set(devices)].sort().forEach((d, i) => colours.set(d, PALETTE[i % PALETTE.length]));
  return colours;
}

/** One metric's chart: keeps its rows sorted by time and redraws when they change. */
export class MetricChart {
  constructor(kind, container, view, colours) {
    this.kind = kind;
    this.container = container;
    this.view = view; // {startMs, endMs, widthMs}
    this.colours = colours;
    this.rows = [];
    const opts = kind === "heart" ? this.heartOptions() : this.barOptions();
    this.plot = new window.uPlot(opts, this.columns(), container);
    this.resizer = new ResizeObserver(() => this.fit());
    this.resizer.observe(container);
  }

  size() {
    const width = Math.max(240, this.container.clientWidth);
    return { width, height: width < 500 ? 190 : 240 };
  }

  fit() {
    const { width, height } = this.size();
    if (width !== this.plot.width || height !== this.plot.height) this.plot.setSize({ width, height });
  }

  base(yLabel) {
    return {
      ...this.size(),
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: () => [this.view.startMs / 1000, this.view.endMs / 1000] },
      },
      axes: [{}, { label: yLabel, size: 56 }],
    };
  }

  heartOptions() {
    return {
      ...this.base("bpm"),
      series: [
        {},
        { label: "min", stroke: "rgba(0, 114, 178, 0.35)", width: 1, points: { show: false } },
        { label: "max", stroke: "rgba(0, 114, 178, 0.35)", width: 1, points: { show: false } },
        { label: "mean", stroke: "rgba(0, 0, 0, 0)", width: 2, points: { show: false } },
      ],
      bands: [{ series: [2, 1], fill: BAND }],
      hooks: { draw: [(u) => this.drawDevices(u)] },
    };
  }

  barOptions() {
    const bars = window.uPlot.paths.bars({ size: [0.8, 40], align: 1 });
    return {
      ...this.base(this.kind === "steps" ? "steps" : "kcal"),
      scales: { ...this.base("").scales, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      series: [{}, { label: this.kind, fill: BAR[this.kind], stroke: BAR[this.kind], paths: bars, points: { show: false } }],
    };
  }

  columns() {
    const xs = this.rows.map((r) => r.t / 1000);
    const values = this.rows.map((r) => r.value);
    if (this.kind !== "heart") return [xs, values];
    return [xs, this.rows.map((r) => r.min ?? r.value), this.rows.map((r) => r.max ?? r.value), values];
  }

  setRows(rows) {
    for (const row of rows) this.noteDevice(row.device);
    this.rows = rows;
    this.redraw();
  }

  /** Adds or replaces the bucket that starts at row.t; drops buckets before the view. */
  noteDevice(device) {
    if (this.kind === "heart" && !this.colours.has(device)) {
      this.colours.set(device, PALETTE[this.colours.size % PALETTE.length]);
      this.onNewDevice?.();
    }
  }

  upsert(row) {
    this.noteDevice(row.device);
    const rows = this.rows;
    let lo = 0;
    let hi = rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (rows[mid].t < row.t) lo = mid + 1;
      else hi = mid;
    }
    if (lo < rows.length && rows[lo].t === row.t) rows[lo] = row;
    else rows.splice(lo, 0, row);
    const first = rows.findIndex((r) => r.t >= this.view.startMs);
    if (first > 0) rows.splice(0, first);
    this.scheduleRedraw();
  }

  scheduleRedraw() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.redraw();
    });
  }

  redraw() {
    this.plot.setData(this.columns(), true);
  }

  drawDevices(u) {
    const xs = u.data[0];
    const ys = u.data[3];
    if (xs.length === 0) return;
    const ctx = u.ctx;
    const gap = (this.view.widthMs * 1.5) / 1000; // wider than a (25-hour) day: a hole
    const px = (i) => [u.valToPos(xs[i], "x", true), u.valToPos(ys[i], "y", true)];
    const paths = new Map();
    const sparse = xs.length < u.bbox.width / (8 * devicePixelRatio);
    for (let i = 0; i < xs.length; i++) {
      const colour = this.colours.get(this.rows[i].device) || PALETTE[0];
      if (!paths.has(colour)) paths.set(colour, { line: new Path2D(), dots: new Path2D() });
      const path = paths.get(colour);
      const [x, y] = px(i);
      const before = i > 0 && xs[i] - xs[i - 1] <= gap;
      const after = i + 1 < xs.length && xs[i + 1] - xs[i] <= gap;
      // each bucket draws the line from halfway to its neighbours: a colour per bucket
      if (before) {
        const [x0, y0] = px(i - 1);
        path.line.moveTo((x0 + x) / 2, (y0 + y) / 2);
        path.line.lineTo(x, y);
      } else path.line.moveTo(x, y);
      if (after) {
        const [x1, y1] = px(i + 1);
        path.line.lineTo((x + x1) / 2, (y + y1) / 2);
      }
      if (sparse || !(before || after)) {
        path.dots.moveTo(x + 2.5 * devicePixelRatio, y);
        path.dots.arc(x, y, 2.5 * devicePixelRatio, 0, 2 * Math.PI);
      }
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.lineJoin = "round";
    for (const [colour, path] of paths) {
      ctx.strokeStyle = colour;
      ctx.fillStyle = colour;
      ctx.stroke(path.line);
      ctx.fill(path.dots);
    }
    ctx.restore();
  }

  destroy() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.resizer.disconnect();
    this.plot.destroy();
  }
}
