// Charts as SVG text: the sprint burndown (remaining against ideal, one point per day)
// and velocity (story points done per sprint). Plain SVG, no chart library: a few
// hundred bytes of code, and a picture screen readers get a summary of.

const NS = "http://www.w3.org/2000/svg";
const W = 640;
const H = 260;
const PAD = { left: 44, right: 16, top: 16, bottom: 36 };

/** One day of a burndown. */
export interface BurndownPoint {
  date: string;
  hours: number;
  ideal: number;
}

function element(name: string, attributes: Record<string, string | number>): SVGElement {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

function text(x: number, y: number, content: string, anchor = "middle"): SVGElement {
  const node = element("text", { x, y, "text-anchor": anchor, class: "axis" });
  node.textContent = content;
  return node;
}

function frame(label: string): SVGSVGElement {
  const svg = element("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": label,
  }) as SVGSVGElement;
  const title = element("title", {});
  title.textContent = label;
  svg.append(title);
  svg.append(element("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: "grid" }));
  svg.append(element("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, class: "grid" }));
  return svg;
}

/**
 * The burndown of `days`; the remaining line is drawn up to `today` (the team's day:
 * later days have no estimates yet), the ideal line over the whole sprint.
 */
export function burndownChart(days: BurndownPoint[], today: string): SVGSVGElement {
  const shown = days.filter((d) => d.date <= today);
  const last = shown.at(-1);
  const label = last
    ? `Burndown: ${last.hours} hours remaining on ${last.date} (ideal ${Math.round(last.ideal)}), day ${shown.length} of ${days.length}`
    : `Burndown: the sprint has not begun (${days.length} days)`;
  const svg = frame(label);
  svg.dataset.lastHours = last ? String(last.hours) : "";
  svg.dataset.lastDate = last?.date ?? "";
  const top = Math.max(1, ...days.map((d) => Math.max(d.hours, d.ideal)));
  const x = (i: number) => PAD.left + (days.length < 2 ? 0 : (i * (W - PAD.left - PAD.right)) / (days.length - 1));
  const y = (h: number) => H - PAD.bottom - (h * (H - PAD.top - PAD.bottom)) / top;
  const line = (points: [number, number][], cls: string) =>
    element("polyline", { points: points.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" "), class: cls });
  svg.append(line(days.map((d, i) => [x(i), y(d.ideal)]), "ideal"));
  if (shown.length > 0) svg.append(line(shown.map((d, i) => [x(i), y(d.hours)]), "remaining"));
  shown.forEach((d, i) => {
    const dot = element("circle", { cx: x(i), cy: y(d.hours), r: 3.5, class: "remaining" });
    const tip = element("title", {});
    tip.textContent = `${d.date}: ${d.hours} h (ideal ${d.ideal.toFixed(1)})`;
    dot.append(tip);
    svg.append(dot);
  });
  svg.append(text(PAD.left - 6, y(top) + 4, `${Math.round(top)} h`, "end"));
  svg.append(text(PAD.left - 6, y(0) + 4, "0", "end"));
  if (days.length > 0) {
    svg.append(text(x(0), H - PAD.bottom + 18, days[0].date.slice(5), "start"));
    svg.append(text(x(days.length - 1), H - PAD.bottom + 18, days[days.length - 1].date.slice(5), "end"));
  }
  return svg;
}

/** Bars of story points done, oldest sprint first, with the average as a line. */
export function velocityChart(sprints: { name: string; points: number }[], average: number): SVGSVGElement {
  const label = sprints.length
    ? `Velocity: ${sprints.map((s) => `${s.name} ${s.points}`).join(", ")} story points; average ${average.toFixed(1)}`
    : "Velocity: no completed sprint yet";
  const svg = frame(label);
  const top = Math.max(1, average, ...sprints.map((s) => s.points));
  const slot = (W - PAD.left - PAD.right) / Math.max(1, sprints.length);
  const y = (p: number) => H - PAD.bottom - (p * (H - PAD.top - PAD.bottom)) / top;
  sprints.forEach((s, i) => {
    const width = Math.min(slot * 0.6, 56);
    const bar = element("rect", {
      x: PAD.left + i * slot + (slot - width) / 2,
      y: y(s.points),
      width,
      height: H - PAD.bottom - y(s.points),
      class: "bar",
    });
    const tip = element("title", {});
    tip.textContent = `${s.name}: ${s.points} points`;
    bar.append(tip);
    svg.append(bar);
    svg.append(text(PAD.left + i * slot + slot / 2, H - PAD.bottom + 18, s.name));
  });
  if (sprints.length) {
    svg.append(element("line", { x1: PAD.left, x2: W - PAD.right, y1: y(average), y2: y(average), class: "ideal" }));
  } else {
    svg.append(text(W / 2, H / 2, "No completed sprint yet"));
  }
  svg.append(text(PAD.left - 6, y(top) + 4, String(Math.round(top)), "end"));
  return svg;
}
